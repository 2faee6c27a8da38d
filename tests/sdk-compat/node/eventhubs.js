// Node scenarios for the built-in Event Hubs-compatible endpoint: @azure/event-hubs'
// EventHubConsumerClient, unchanged, reads telemetry that azure-iot-device sent over each of its
// transports: Mqtt, MqttWs, Amqp, AmqpWs and Http.
//
//   node eventhubs.js <dev|tls|ws>
//
// `dev` uses the UseDevelopmentEmulator=true connection string (plain AMQP on 5672, no CA);
// `tls` the TLS form on 5671, trusted through NODE_EXTRA_CA_CERTS like the Node e2e suite; `ws`
// the TLS form over a WebSocket (webSocketOptions with the `ws` package, as the Event Hubs docs
// show: wss://{host}:443/$servicebus/websocket), trusted the same way.
// Prints one `RESULT PASS` or `RESULT FAIL <reason>` line on stdout; diagnostics go to stderr.
'use strict';

const { EventHubConsumerClient } = require('@azure/event-hubs');
const WebSocket = require('ws');
const {
  Message,
  Mqtt,
  MqttWs,
  Amqp,
  AmqpWs,
  Http,
  Registry,
  WAIT_MS,
  check,
  createDevice,
  describe,
  log,
  onCleanup,
  openDevice,
  parseConnectionString,
  run,
  serviceConnectionString,
  withTimeout,
} = require('./common');

// The Event Hubs-compatible connection string, built from the IoT Hub one as the portal shows it.
function eventHubConnectionString(development) {
  const cs = parseConnectionString(serviceConnectionString());
  const host = cs.HostName;
  let out = `Endpoint=sb://${host}/;SharedAccessKeyName=${cs.SharedAccessKeyName};SharedAccessKey=${cs.SharedAccessKey};EntityPath=${host.split('.')[0]}`;
  if (development) out += ';UseDevelopmentEmulator=true';
  return out;
}

function bodyBytes(event) {
  const b = event.body;
  if (Buffer.isBuffer(b)) return b;
  if (b === undefined || b === null) return Buffer.alloc(0);
  if (typeof b === 'string') return Buffer.from(b);
  return Buffer.from(JSON.stringify(b));
}

async function scenario(development, clientOptions) {
  const cs = eventHubConnectionString(development);
  log('event hub connection string:', cs);
  const registry = Registry.fromConnectionString(serviceConnectionString());
  const { deviceId, key } = await createDevice(registry, 'eh-node');
  onCleanup(() => registry.delete(deviceId));

  const consumer = new EventHubConsumerClient('$Default', cs, clientOptions);
  onCleanup(() => consumer.close());
  const ids = await withTimeout(consumer.getPartitionIds(), WAIT_MS, 'getPartitionIds');
  check(JSON.stringify(ids) === '["0","1","2","3"]', `partition ids ${JSON.stringify(ids)}`);

  const received = [];
  let wake = () => {};
  const subscription = consumer.subscribe(
    {
      processEvents: async (events, context) => {
        for (const e of events) {
          if (e.systemProperties && e.systemProperties['iothub-connection-device-id'] === deviceId) {
            received.push({ partitionId: context.partitionId, event: e });
          }
        }
        wake();
      },
      processError: async (err, context) => log('subscription error', context.partitionId, describe(err)),
    },
    { startPosition: { enqueuedOn: new Date(Date.now() - 5000) }, maxWaitTimeInSeconds: 1 },
  );
  onCleanup(() => subscription.close());

  const big = Buffer.alloc(255 * 1024, 'x');
  const sent = [];
  const transports = [
    ['mqtt', Mqtt],
    ['mqttws', MqttWs],
    ['amqp', Amqp],
    ['amqpws', AmqpWs],
    ['http', Http],
  ];
  for (const [name, Transport] of transports) {
    const device = await openDevice(deviceId, key, Transport);
    const m = new Message(JSON.stringify({ transport: name }));
    m.messageId = `${name}-${Date.now()}`;
    m.contentType = 'application/json';
    m.contentEncoding = 'utf-8';
    m.properties.add('transport', name);
    await device.sendEvent(m);
    await device.sendEvent(new Message(''));
    sent.push(m.messageId);
    if (name !== 'http') {
      await device.sendEvent(new Message(big));
    }
    await device.close();
  }
  // A message and an empty one per transport, and a big one on each but Http.
  const expected = transports.length * 3 - 1;
  const deadline = Date.now() + WAIT_MS;
  while (received.length < expected && Date.now() < deadline) {
    await new Promise((resolve) => {
      wake = resolve;
      setTimeout(resolve, 500);
    });
  }
  log('received', received.length, 'events');
  check(received.length === expected, `received ${received.length} of ${expected} events`);
  for (const id of sent) {
    const hit = received.find((r) => r.event.messageId === id);
    check(hit, `message ${id} not received`);
    const e = hit.event;
    const transport = id.split('-')[0];
    check(e.contentType === 'application/json', `content type ${e.contentType}`);
    check(e.properties && e.properties.transport === transport, `properties ${JSON.stringify(e.properties)}`);
    check(bodyBytes(e).toString() === JSON.stringify({ transport }), `body ${bodyBytes(e).toString()}`);
    check(typeof e.offset === 'string' || typeof e.offset === 'number', `offset ${e.offset}`);
    check(e.enqueuedTimeUtc instanceof Date, 'enqueuedTimeUtc');
    check(e.systemProperties['iothub-message-source'] === 'Telemetry', 'iothub-message-source');
  }
  const empties = received.filter((r) => bodyBytes(r.event).length === 0);
  check(empties.length === transports.length, `${empties.length} zero-length bodies, expected ${transports.length}`);
  const bigs = received.filter((r) => bodyBytes(r.event).length === big.length);
  check(bigs.length === transports.length - 1, `${bigs.length} bodies of ${big.length} bytes, expected ${transports.length - 1}`);

  const partitionId = received[0].partitionId;
  const last = received[received.length - 1].event;
  const props = await withTimeout(consumer.getPartitionProperties(partitionId), WAIT_MS, 'getPartitionProperties');
  log('partition properties', JSON.stringify(props));
  check(props.partitionId === partitionId, `partition id ${props.partitionId}`);
  check(props.lastEnqueuedSequenceNumber >= last.sequenceNumber, `last sequence number ${props.lastEnqueuedSequenceNumber} < ${last.sequenceNumber}`);
  check(props.isEmpty === false, 'isEmpty');
  const hub = await consumer.getEventHubProperties();
  check(JSON.stringify(hub.partitionIds) === JSON.stringify(ids), `hub properties ${JSON.stringify(hub)}`);
}

run({
  dev: () => scenario(true),
  tls: () => scenario(false),
  ws: () => scenario(false, { webSocketOptions: { webSocket: WebSocket } }),
});
