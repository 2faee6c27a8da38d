// Direct methods with the official Node SDKs: azure-iot-device answers (onDeviceMethod) over
// Mqtt, MqttWs, Amqp and AmqpWs, azure-iothub calls (Client.invokeDeviceMethod over HTTPS).
//
//   node methods.js <mqtt|mqtt-ws|amqp|amqp-ws|errors>
//
// Prints one `RESULT PASS` or `RESULT FAIL <reason>` line on stdout; diagnostics go to stderr.
'use strict';

const {
  DeviceClient,
  Mqtt,
  MqttWs,
  Amqp,
  AmqpWs,
  NoRetry,
  Registry,
  ServiceClient,
  ScenarioFailure,
  caPem,
  check,
  createDevice,
  describe,
  deviceConnectionString,
  log,
  onCleanup,
  openDevice,
  run,
  serviceConnectionString,
  withTimeout,
} = require('./common');

// Every payload shape must survive the trip both ways exactly.
const PAYLOADS = [null, '', 'foo', {}, { k1: 'v1' }, [1, 'two', { three: 3 }]];

function invoke(service, deviceId, methodName, payload, extra = {}) {
  return withTimeout(
    service.invokeDeviceMethod(deviceId, { methodName, payload, responseTimeoutInSeconds: 30, ...extra }),
    45000,
    `invokeDeviceMethod(${methodName}) did not return`
  );
}

// Registers an echo handler for `name`: status 200 + call count, the payload it got back.
function echo(client, name, seen) {
  client.onDeviceMethod(name, (request, response) => {
    seen.push(request.payload);
    log(`device got ${name}`, request.requestId, JSON.stringify(request.payload));
    response.send(200 + seen.length, request.payload, (err) => err && log('response.send failed:', describe(err)));
  });
}

async function expectMethodError(promise, status, code, what) {
  const started = Date.now();
  try {
    const r = await promise;
    throw new ScenarioFailure(`${what}: expected HTTP ${status}, got ${JSON.stringify(r.result)}`);
  } catch (err) {
    if (err instanceof ScenarioFailure) throw err;
    const got = err.response && err.response.statusCode;
    const body = String(err.responseBody || '');
    log(`${what} ->`, describe(err), `after ${(Date.now() - started) / 1000}s`);
    check(got === status, `${what}: expected HTTP ${status}, got ${describe(err)}`);
    check(body.includes(String(code)), `${what}: the body does not name ${code}: ${body}`);
    return (Date.now() - started) / 1000;
  }
}

// Waits until a call gets through: the method subscription is made in the background.
async function warmUp(service, deviceId) {
  for (let i = 0; i < 50; i++) {
    try {
      await invoke(service, deviceId, 'warmup', null, { connectTimeoutInSeconds: 5 });
      return;
    } catch (err) {
      log('warm-up call failed, retrying:', describe(err));
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw new ScenarioFailure('no method call reached the device');
}

function scenarioRoundTrip(Transport, label) {
  return async () => {
    const registry = Registry.fromConnectionString(serviceConnectionString());
    const { deviceId, key } = await createDevice(registry, `node-meth-${label.toLowerCase()}`);
    onCleanup(() => registry.delete(deviceId));
    const client = DeviceClient.fromConnectionString(deviceConnectionString(deviceId, key), Transport);
    client.setRetryPolicy(new NoRetry());
    client.on('error', (err) => log('device client error:', describe(err)));
    client.on('disconnect', (err) => log('device client disconnect:', describe(err)));
    // A token that is renewed every 5 s: the methods must keep working across renewals.
    await client.setOptions({ ca: caPem(), tokenRenewal: { tokenValidTimeInSeconds: 10, tokenRenewalMarginInSeconds: 5 } });
    await client.open();
    onCleanup(() => client.close());
    const seen = [];
    echo(client, 'warmup', []);
    echo(client, 'reboot', seen);
    const service = ServiceClient.fromConnectionString(serviceConnectionString());
    await warmUp(service, deviceId);
    for (const payload of PAYLOADS) {
      const { result } = await invoke(service, deviceId, 'reboot', payload);
      log('result', JSON.stringify(result));
      check(
        JSON.stringify(result.payload) === JSON.stringify(payload),
        `payload ${JSON.stringify(payload)} came back as ${JSON.stringify(result.payload)}`
      );
      check(result.status === 200 + seen.length, `status ${result.status} after ${seen.length} calls`);
      check(JSON.stringify(seen[seen.length - 1]) === JSON.stringify(payload), `the device saw ${JSON.stringify(seen[seen.length - 1])}`);
    }
    // After the token was renewed (MQTT reconnects, AMQP puts a new token), calls still arrive.
    await new Promise((r) => setTimeout(r, 6500));
    const { result } = await invoke(service, deviceId, 'reboot', { after: 'renewal' }, { connectTimeoutInSeconds: 10 });
    check(result.payload && result.payload.after === 'renewal', `after renewal: ${JSON.stringify(result)}`);
  };
}

async function scenarioErrors() {
  const registry = Registry.fromConnectionString(serviceConnectionString());
  const { deviceId, key } = await createDevice(registry, 'node-meth-err');
  onCleanup(() => registry.delete(deviceId));
  const service = ServiceClient.fromConnectionString(serviceConnectionString());
  await expectMethodError(invoke(service, deviceId, 'm', null), 404, 404103, 'offline');
  const client = await openDevice(deviceId, key, Mqtt);
  onCleanup(() => client.close());
  echo(client, 'warmup', []);
  client.onDeviceMethod('silent', (request) => log('not answering', request.requestId));
  await warmUp(service, deviceId);
  const took = await expectMethodError(
    invoke(service, deviceId, 'silent', 'x', { responseTimeoutInSeconds: 5 }),
    504,
    504101,
    'silent'
  );
  check(took >= 4 && took <= 10, `504101 after ${took}s for a 5 s response timeout`);
}

const SCENARIOS = {
  mqtt: scenarioRoundTrip(Mqtt, 'Mqtt'),
  'mqtt-ws': scenarioRoundTrip(MqttWs, 'MqttWs'),
  amqp: scenarioRoundTrip(Amqp, 'Amqp'),
  'amqp-ws': scenarioRoundTrip(AmqpWs, 'AmqpWs'),
  errors: scenarioErrors,
};

run(SCENARIOS);
