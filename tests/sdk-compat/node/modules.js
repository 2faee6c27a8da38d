// Module identities with the official Node SDKs: azure-iot-device ModuleClient over Mqtt, MqttWs,
// Amqp and AmqpWs sends telemetry (read back by @azure/event-hubs with the module id), gets and
// patches its twin, receives a desired patch and answers a method that azure-iothub
// Client.invokeDeviceMethod(deviceId, moduleId, ...) calls; azure-iothub Registry addModule /
// getModule / getModulesOnDevice / updateModule (etag and force) / removeModule, and the module
// twin through getModuleTwin / updateModuleTwin. Unchanged SDKs, pointed at the emulator with the
// connection string and CA trust only.
//
//   node modules.js <module-mqtt|module-mqtt-ws|module-amqp|module-amqp-ws|registry>
//
// Prints one `RESULT PASS` or `RESULT FAIL <reason>` line on stdout; diagnostics go to stderr.
'use strict';

const { ModuleClient } = require('azure-iot-device');
const { EventHubConsumerClient } = require('@azure/event-hubs');
const {
  Message,
  Mqtt,
  MqttWs,
  Amqp,
  AmqpWs,
  NoRetry,
  Registry,
  ServiceClient,
  ScenarioFailure,
  WAIT_MS,
  caPem,
  check,
  createDevice,
  describe,
  expectError,
  hostName,
  log,
  onCleanup,
  parseConnectionString,
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

function moduleConnectionString(deviceId, moduleId, key) {
  return `HostName=${hostName()};DeviceId=${deviceId};ModuleId=${moduleId};SharedAccessKey=${key}`;
}

// The Event Hubs-compatible connection string (TLS on 5671, trusted through NODE_EXTRA_CA_CERTS).
function eventHubConnectionString() {
  const cs = parseConnectionString(serviceConnectionString());
  const host = cs.HostName;
  return `Endpoint=sb://${host}/;SharedAccessKeyName=${cs.SharedAccessKeyName};SharedAccessKey=${cs.SharedAccessKey};EntityPath=${host.split('.')[0]}`;
}

// A device with one module whose keys the hub generated (addModule with empty keys, as the Node
// e2e helper does); returns the ids and the module's primary key read back with getModule.
async function createModule(reg, prefix) {
  const { deviceId } = await createDevice(reg, prefix);
  onCleanup(() => reg.delete(deviceId).catch(() => {}));
  const moduleId = uniqueId('mod');
  await reg.addModule({
    deviceId,
    moduleId,
    authentication: { type: 'sas', symmetricKey: { primaryKey: '', secondaryKey: '' } },
  });
  const { responseBody: m } = await reg.getModule(deviceId, moduleId);
  const key = m.authentication && m.authentication.symmetricKey && m.authentication.symmetricKey.primaryKey;
  check(key, `getModule returned no generated key: ${JSON.stringify(m)}`);
  return { deviceId, moduleId, key };
}

async function openModule(deviceId, moduleId, key, Transport) {
  const client = ModuleClient.fromConnectionString(moduleConnectionString(deviceId, moduleId, key), Transport);
  client.setRetryPolicy(new NoRetry());
  client.on('error', (err) => log('module client error:', describe(err)));
  client.on('disconnect', (err) => log('module client disconnect:', describe(err)));
  await client.setOptions({ ca: caPem() });
  await client.open();
  return client;
}

// Events of one device from the Event Hubs-compatible endpoint; `waitFor(pred)` waits for one.
async function eventsOf(deviceId) {
  const consumer = new EventHubConsumerClient('$Default', eventHubConnectionString());
  onCleanup(() => consumer.close());
  const received = [];
  const subscription = consumer.subscribe(
    {
      processEvents: async (events) => {
        for (const e of events) {
          if (e.systemProperties && e.systemProperties['iothub-connection-device-id'] === deviceId) {
            log('event:', JSON.stringify({ body: String(e.body), properties: e.properties, systemProperties: e.systemProperties }));
            received.push(e);
          }
        }
      },
      processError: async (err, context) => log('subscription error', context.partitionId, describe(err)),
    },
    { startPosition: { enqueuedOn: new Date(Date.now() - 5000) }, maxWaitTimeInSeconds: 1 }
  );
  onCleanup(() => subscription.close());
  return {
    async waitFor(pred, what) {
      const deadline = Date.now() + WAIT_MS;
      while (Date.now() < deadline) {
        const hit = received.find(pred);
        if (hit) return hit;
        await sleep(250);
      }
      throw new ScenarioFailure(`${what}: not received; ${received.length} events of the device seen`);
    },
  };
}

// Waits for a desired delta matching `pred` (the twin emits its merged desired object: copy it).
function desiredQueue(twin) {
  const seen = [];
  twin.on('properties.desired', (delta) => {
    log('desired delta:', JSON.stringify(delta));
    seen.push(JSON.parse(JSON.stringify(delta)));
  });
  return {
    async next(pred, what) {
      const deadline = Date.now() + WAIT_MS;
      while (Date.now() < deadline) {
        const i = seen.findIndex(pred);
        if (i >= 0) return seen.splice(i, 1)[0];
        await sleep(100);
      }
      throw new ScenarioFailure(`${what}: no such desired delta; seen ${JSON.stringify(seen)}`);
    },
  };
}

// Expects `promise` to fail with HTTP `status`.
async function expectStatus(promise, status, what) {
  let result;
  try {
    result = await promise;
  } catch (err) {
    log(`${what} failed as expected?`, describe(err));
    check(err.response && err.response.statusCode === status, `${what}: expected HTTP ${status}, got ${describe(err)}`);
    return err;
  }
  throw new ScenarioFailure(`${what}: expected HTTP ${status}, but it succeeded: ${JSON.stringify(result && result.responseBody)}`);
}

function invoke(service, deviceId, moduleId, methodName, payload, extra = {}) {
  return withTimeout(
    moduleId === undefined
      ? service.invokeDeviceMethod(deviceId, { methodName, payload, responseTimeoutInSeconds: 30, ...extra })
      : service.invokeDeviceMethod(deviceId, moduleId, { methodName, payload, responseTimeoutInSeconds: 30, ...extra }),
    45000,
    `invokeDeviceMethod(${deviceId}, ${moduleId}, ${methodName}) did not return`
  );
}

function scenarioModule(Transport, label) {
  return async () => {
    const reg = registry();
    const { deviceId, moduleId, key } = await createModule(reg, `node-mod-${label.toLowerCase()}`);
    const events = await eventsOf(deviceId);
    const client = await openModule(deviceId, moduleId, key, Transport);
    onCleanup(() => client.close().catch(() => {}));

    // Telemetry: read back with the module id the hub stamps.
    const m = new Message(JSON.stringify({ from: moduleId, transport: label }));
    m.messageId = uniqueId(`mod-${label}`);
    m.properties.add('transport', label);
    await client.sendEvent(m);
    const e = await events.waitFor((ev) => ev.messageId === m.messageId, `telemetry ${m.messageId}`);
    check(e.systemProperties['iothub-connection-module-id'] === moduleId, `iothub-connection-module-id: ${JSON.stringify(e.systemProperties)}`);
    check(e.properties && e.properties.transport === label, `properties ${JSON.stringify(e.properties)}`);

    // The module's twin, not the device's.
    const twin = await client.getTwin();
    log('module twin properties:', JSON.stringify(twin.properties));
    check(twin.properties.desired.$version === 1, `new module twin desired: ${JSON.stringify(twin.properties.desired)}`);
    await new Promise((resolve, reject) =>
      twin.properties.reported.update({ role: 'sensor', transport: label }, (err) => (err ? reject(err) : resolve()))
    );
    const { responseBody: serviceTwin } = await reg.getModuleTwin(deviceId, moduleId);
    log('service sees module twin:', JSON.stringify(serviceTwin));
    check(serviceTwin.moduleId === moduleId, `getModuleTwin moduleId: ${serviceTwin.moduleId}`);
    check(serviceTwin.properties.reported.role === 'sensor', `module reported: ${JSON.stringify(serviceTwin.properties.reported)}`);
    const { responseBody: deviceTwin } = await reg.getTwin(deviceId);
    check(deviceTwin.properties.reported.role === undefined, `the device twin got the module's reported: ${JSON.stringify(deviceTwin.properties.reported)}`);

    const deltas = desiredQueue(twin);
    // The desired subscription is made in the background with no completion to wait for.
    await sleep(1500);
    await reg.updateModuleTwin(deviceId, moduleId, { properties: { desired: { interval: 7 } } }, serviceTwin.etag);
    const delta = await deltas.next((d) => d.interval === 7, 'desired patch');
    check(delta.$version === 2, `delta $version ${delta.$version}`);

    // A method invoked on the module reaches its handler.
    const calls = [];
    client.onMethod('reboot', (request, response) => {
      calls.push(request.payload);
      log('module got reboot', request.requestId, JSON.stringify(request.payload));
      response.send(201, { rebooted: moduleId, got: request.payload }, (err) => err && log('response.send failed:', describe(err)));
    });
    const service = ServiceClient.fromConnectionString(serviceConnectionString());
    let result;
    for (let i = 0; i < 50 && !result; i++) {
      try {
        ({ result } = await invoke(service, deviceId, moduleId, 'reboot', { n: 1 }, { connectTimeoutInSeconds: 5 }));
      } catch (err) {
        log('method call failed, retrying (the subscription is made in the background):', describe(err));
        await sleep(200);
      }
    }
    log('method result:', JSON.stringify(result));
    check(result && result.status === 201, `method status: ${JSON.stringify(result)}`);
    check(result.payload && result.payload.rebooted === moduleId && result.payload.got.n === 1, `method payload: ${JSON.stringify(result.payload)}`);
    // The device itself listens for nothing: a call to the device is not the module's.
    let refused;
    try {
      const r = await invoke(service, deviceId, undefined, 'reboot', null, { connectTimeoutInSeconds: 0 });
      throw new ScenarioFailure(`a device method reached the module: ${JSON.stringify(r.result)}`);
    } catch (err) {
      if (err instanceof ScenarioFailure) throw err;
      refused = err;
    }
    log('device method refused:', describe(refused));
    check(refused.response && refused.response.statusCode === 404, `device method: expected 404, got ${describe(refused)}`);
    check(calls.length === 1, `the module handler ran ${calls.length} times`);
  };
}

async function scenarioRegistry() {
  const reg = registry();
  const { deviceId } = await createDevice(reg, 'node-modreg');
  onCleanup(() => reg.delete(deviceId).catch(() => {}));
  const a = uniqueId('moda');
  const b = uniqueId('modb');
  const primaryKey = Buffer.from(uniqueId('key-primary-32-bytes-long-xx')).toString('base64');
  const secondaryKey = Buffer.from(uniqueId('key-second-32-bytes-long-xxx')).toString('base64');
  const { responseBody: added } = await reg.addModule({
    deviceId,
    moduleId: a,
    managedBy: 'node-e2e',
    authentication: { type: 'sas', symmetricKey: { primaryKey, secondaryKey } },
  });
  log('addModule:', JSON.stringify(added));
  check(added.moduleId === a && added.deviceId === deviceId, `addModule: ${JSON.stringify(added)}`);
  check(added.authentication.symmetricKey.primaryKey === primaryKey, 'addModule kept the given primary key');
  await reg.addModule({ deviceId, moduleId: b, authentication: { type: 'sas', symmetricKey: { primaryKey: '', secondaryKey: '' } } });
  await expectError(reg.addModule({ deviceId, moduleId: a }), serviceErrors.DeviceAlreadyExistsError, 'addModule twice');

  const { responseBody: got } = await reg.getModule(deviceId, a);
  check(got.managedBy === 'node-e2e' && got.etag, `getModule: ${JSON.stringify(got)}`);
  const { responseBody: list } = await reg.getModulesOnDevice(deviceId);
  const ids = list.map((m) => m.moduleId).sort();
  check(JSON.stringify(ids) === JSON.stringify([a, b].sort()), `getModulesOnDevice: ${JSON.stringify(ids)}`);

  // With the etag, then forced; a stale etag fails.
  const { responseBody: byEtag } = await reg.updateModule({ ...got, managedBy: 'by-etag' });
  check(byEtag.managedBy === 'by-etag' && byEtag.etag !== got.etag, `updateModule with etag: ${JSON.stringify(byEtag)}`);
  await expectError(reg.updateModule({ ...got, managedBy: 'stale' }), serviceErrors.InvalidEtagError, 'updateModule with a stale etag');
  const newKey = Buffer.from(uniqueId('key-rotated-32-bytes-long-xx')).toString('base64');
  const { responseBody: forced } = await reg.updateModule(
    { deviceId, moduleId: a, managedBy: 'forced', authentication: { type: 'sas', symmetricKey: { primaryKey: newKey, secondaryKey } } },
    true
  );
  check(forced.managedBy === 'forced' && forced.authentication.symmetricKey.primaryKey === newKey, `updateModule forced: ${JSON.stringify(forced)}`);

  // The module twin through the registry.
  const { responseBody: twin } = await reg.getModuleTwin(deviceId, a);
  check(twin.deviceId === deviceId && twin.moduleId === a, `getModuleTwin: ${JSON.stringify(twin)}`);
  const { responseBody: patched } = await reg.updateModuleTwin(deviceId, a, { tags: { site: 'x' }, properties: { desired: { k: 1 } } }, twin.etag);
  check(patched.tags.site === 'x' && patched.properties.desired.k === 1, `updateModuleTwin: ${JSON.stringify(patched)}`);

  await reg.removeModule(deviceId, a);
  // 404 ModuleNotFound: azure-iothub has no class for it (a plain 'Not found' error).
  await expectStatus(reg.getModule(deviceId, a), 404, 'getModule after removeModule');
  const { responseBody: rest } = await reg.getModulesOnDevice(deviceId);
  check(rest.length === 1 && rest[0].moduleId === b, `modules left: ${JSON.stringify(rest)}`);
  // With the module object its etag goes in If-Match. Only the callback form: the promise form
  // of removeModule(module) loses its callback in azure-iothub 1.16.6.
  const { responseBody: modB } = await reg.getModule(deviceId, b);
  await new Promise((resolve, reject) => reg.removeModule(modB, (err) => (err ? reject(err) : resolve())));
  const { responseBody: none } = await reg.getModulesOnDevice(deviceId);
  check(none.length === 0, `modules left after removing both: ${JSON.stringify(none)}`);
}

run({
  'module-mqtt': scenarioModule(Mqtt, 'Mqtt'),
  'module-mqtt-ws': scenarioModule(MqttWs, 'MqttWs'),
  'module-amqp': scenarioModule(Amqp, 'Amqp'),
  'module-amqp-ws': scenarioModule(AmqpWs, 'AmqpWs'),
  registry: scenarioRegistry,
});
