// Node twin scenarios: azure-iot-device getTwin / properties.reported.update /
// twin.on('properties.desired') over Mqtt, MqttWs, Amqp and AmqpWs, and azure-iothub
// Registry getTwin / updateTwin (real and stale etag) / createQuery paging / addDevices /
// updateDevices / removeDevices, unchanged, pointed at the emulator with the connection string
// and CA trust only.
//
//   node twins.js <scenario>     (node twins.js --list prints the names)
'use strict';

const {
  Mqtt,
  MqttWs,
  Amqp,
  AmqpWs,
  Registry,
  ScenarioFailure,
  WAIT_MS,
  check,
  createDevice,
  describe,
  expectError,
  log,
  onCleanup,
  openDevice,
  run,
  serviceConnectionString,
  serviceErrors,
  uniqueId,
  withTimeout,
} = require('./common');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function registry() {
  return Registry.fromConnectionString(serviceConnectionString());
}

// Desired deltas the device twin emits, queued; `next(pred)` waits for one matching `pred`.
function desiredQueue(twin) {
  const seen = [];
  const waiters = [];
  twin.on('properties.desired', (delta) => {
    log('desired delta:', JSON.stringify(delta));
    // The twin emits its own merged desired object, which later patches change: keep a copy.
    seen.push(JSON.parse(JSON.stringify(delta)));
    for (const w of waiters.slice()) w();
  });
  return {
    next(pred, what) {
      const take = () => {
        const i = seen.findIndex(pred);
        return i < 0 ? undefined : seen.splice(i, 1)[0];
      };
      const found = take();
      if (found) return Promise.resolve(found);
      return withTimeout(
        new Promise((resolve) => {
          const w = () => {
            const d = take();
            if (d) {
              waiters.splice(waiters.indexOf(w), 1);
              resolve(d);
            }
          };
          waiters.push(w);
        }),
        WAIT_MS,
        `${what}: no such desired delta; seen ${JSON.stringify(seen)}`
      );
    },
  };
}

function scenarioDevice(Transport, label) {
  return async () => {
    const reg = registry();
    const { deviceId, key } = await createDevice(reg, `node-twin-${label.toLowerCase()}`);
    onCleanup(() => reg.delete(deviceId).catch(() => {}));
    const client = await openDevice(deviceId, key, Transport);
    onCleanup(() => client.close().catch(() => {}));

    const twin = await client.getTwin();
    log('device twin properties:', JSON.stringify(twin.properties));
    check(twin.properties.desired.$version === 1, `new twin desired $version: ${JSON.stringify(twin.properties.desired)}`);

    await new Promise((resolve, reject) =>
      twin.properties.reported.update({ battery: 50, fw: { version: '1.0' } }, (err) => (err ? reject(err) : resolve()))
    );
    await new Promise((resolve, reject) => twin.properties.reported.update({ fw: null }, (err) => (err ? reject(err) : resolve())));
    const { responseBody: serviceTwin } = await reg.getTwin(deviceId);
    const reported = serviceTwin.properties.reported;
    log('service sees reported:', JSON.stringify(reported));
    check(reported.battery === 50, `reported battery: ${JSON.stringify(reported)}`);
    check(reported.fw === undefined, `reported fw not removed by null: ${JSON.stringify(reported)}`);

    const deltas = desiredQueue(twin);
    // The listener subscribes in the background (SUBSCRIBE or AMQP PUT) and offers no
    // completion; give it a moment on loopback.
    await sleep(1500);
    await reg.updateTwin(deviceId, { properties: { desired: { speed: 1 } } }, serviceTwin.etag);
    await reg.updateTwin(deviceId, { properties: { desired: { speed: 2, mode: 'eco' } } }, '*');
    const first = await deltas.next((d) => d.speed === 1, 'first desired update');
    const second = await deltas.next((d) => d.speed === 2, 'second desired update');
    check(first.$version === 2 && second.$version === 3, `delta versions ${first.$version}, ${second.$version}`);
    check(twin.properties.desired.mode === 'eco', `merged desired: ${JSON.stringify(twin.properties.desired)}`);
  };
}

async function scenarioService() {
  const reg = registry();
  const group = uniqueId('nodeq');
  const ids = [];
  for (let i = 0; i < 5; i++) {
    const { deviceId } = await createDevice(reg, group);
    ids.push(deviceId);
    onCleanup(() => reg.delete(deviceId).catch(() => {}));
  }
  const { responseBody: twin } = await reg.getTwin(ids[0]);
  check(twin.deviceId === ids[0] && twin.properties.desired.$version === 1, `getTwin: ${JSON.stringify(twin)}`);
  const { responseBody: updated } = await reg.updateTwin(ids[0], { tags: { group }, properties: { desired: { fw: '1.0' } } }, twin.etag);
  check(updated.tags.group === group && updated.properties.desired.fw === '1.0', `updateTwin: ${JSON.stringify(updated)}`);
  check(updated.etag !== twin.etag, 'the etag did not change');
  await expectError(reg.updateTwin(ids[0], { tags: { stale: true } }, twin.etag), serviceErrors.InvalidEtagError, 'updateTwin with a stale etag');
  for (const id of ids.slice(1)) await reg.updateTwin(id, { tags: { group } }, '*');

  const query = reg.createQuery(`SELECT * FROM devices WHERE tags.group = '${group}'`, 2);
  const seen = [];
  let pages = 0;
  while (query.hasMoreResults) {
    const { result } = await query.nextAsTwin();
    pages++;
    log(`query page ${pages}: ${result.length} twins`);
    for (const t of result) seen.push(t.deviceId);
    if (pages > 10) throw new ScenarioFailure('the query never ended');
  }
  check(pages === 3, `5 twins in pages of 2 took ${pages} pages`);
  check(JSON.stringify(seen.sort()) === JSON.stringify(ids.slice().sort()), `query returned ${JSON.stringify(seen)}`);
}

async function scenarioBulk() {
  const reg = registry();
  const a = uniqueId('node-bulk');
  const b = uniqueId('node-bulk');
  onCleanup(() => reg.delete(a).catch(() => {}));
  onCleanup(() => reg.delete(b).catch(() => {}));
  const { responseBody: added } = await reg.addDevices([{ deviceId: a }, { deviceId: b }]);
  log('addDevices:', JSON.stringify(added));
  check(added.isSuccessful, `addDevices: ${JSON.stringify(added)}`);
  const { responseBody: got } = await reg.get(a);
  check(got.deviceId === a, `get after addDevices: ${JSON.stringify(got)}`);

  const { responseBody: dup } = await reg.addDevices([{ deviceId: a }]);
  check(!dup.isSuccessful && dup.errors.length === 1 && dup.errors[0].errorCode === 'DeviceAlreadyExists', `duplicate addDevices: ${JSON.stringify(dup)}`);

  const { responseBody: upd } = await reg.updateDevices([{ deviceId: a, status: 'disabled' }], true);
  check(upd.isSuccessful, `updateDevices: ${JSON.stringify(upd)}`);
  const { responseBody: disabled } = await reg.get(a);
  check(disabled.status === 'disabled', `status after updateDevices: ${disabled.status}`);

  const { responseBody: removed } = await reg.removeDevices([{ deviceId: a }, { deviceId: b }], true);
  check(removed.isSuccessful, `removeDevices: ${JSON.stringify(removed)}`);
  await expectError(reg.get(b), serviceErrors.DeviceNotFoundError, 'get after removeDevices');
}

const SCENARIOS = {
  'device-mqtt': scenarioDevice(Mqtt, 'Mqtt'),
  'device-mqtt-ws': scenarioDevice(MqttWs, 'MqttWs'),
  'device-amqp': scenarioDevice(Amqp, 'Amqp'),
  'device-amqp-ws': scenarioDevice(AmqpWs, 'AmqpWs'),
  service: scenarioService,
  bulk: scenarioBulk,
};

run(SCENARIOS);
