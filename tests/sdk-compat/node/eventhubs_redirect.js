// The Event Hubs samples' path from an IoT Hub connection string (iothub-beyond-c2d.md 3.7):
// rhea-promise attaches a receiver to messages/events/$management on the hub host over TLS with
// SASL PLAIN `{policy}@sas.root.{hub}` and a SAS token, reads the `amqp:link:redirect` it gets,
// builds the Event Hubs connection string from it as the sample does, and reads with
// @azure/event-hubs.
//
//   node eventhubs_redirect.js redirect
'use strict';

const crypto = require('crypto');
const { Connection, ReceiverEvents } = require('rhea-promise');
const { EventHubConsumerClient } = require('@azure/event-hubs');
const { WAIT_MS, caPem, check, log, onCleanup, parseConnectionString, run, serviceConnectionString, withTimeout } = require('./common');

function sasToken(resource, keyName, key) {
  const sr = encodeURIComponent(resource);
  const se = Math.round(Date.now() / 1000) + 3600;
  const sig = crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(`${sr}\n${se}`).digest('base64');
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}&skn=${keyName}`;
}

async function redirect() {
  const cs = parseConnectionString(serviceConnectionString());
  const hubName = cs.HostName.split('.')[0];
  const connection = new Connection({
    transport: 'tls',
    host: cs.HostName,
    hostname: cs.HostName,
    port: 5671,
    ca: caPem(),
    username: `${cs.SharedAccessKeyName}@sas.root.${hubName}`,
    password: sasToken(`${cs.HostName}/messages/events`, cs.SharedAccessKeyName, cs.SharedAccessKey),
    reconnect: false,
  });
  await withTimeout(connection.open(), WAIT_MS, 'AMQP open');
  onCleanup(() => connection.close());
  const error = await withTimeout(
    new Promise((resolve, reject) => {
      connection
        .createReceiver({ source: { address: `amqps://${cs.HostName}/messages/events/$management` } })
        .then((receiver) => {
          receiver.on(ReceiverEvents.receiverError, (ctx) => resolve(ctx.receiver && ctx.receiver.error));
        })
        .catch((err) => resolve(err));
    }),
    WAIT_MS,
    'the redirect',
  );
  log('redirect error:', JSON.stringify(error));
  check(error && error.condition === 'amqp:link:redirect', `expected amqp:link:redirect, got ${JSON.stringify(error)}`);
  const host = error.info && error.info.hostname;
  const m = /:\d+\/(.*)\/\$management/i.exec(error.info && error.info.address);
  check(host && m, `redirect info ${JSON.stringify(error.info)}`);
  const ehCs = `Endpoint=sb://${host}/;EntityPath=${m[1]};SharedAccessKeyName=${cs.SharedAccessKeyName};SharedAccessKey=${cs.SharedAccessKey}`;
  log('event hub connection string from the redirect:', ehCs);
  const consumer = new EventHubConsumerClient('$Default', ehCs);
  onCleanup(() => consumer.close());
  const ids = await withTimeout(consumer.getPartitionIds(), WAIT_MS, 'getPartitionIds');
  check(ids.length > 0, `partition ids ${JSON.stringify(ids)}`);
}

run({ redirect });
