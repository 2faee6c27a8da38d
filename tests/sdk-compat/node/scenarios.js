// Node scenarios: azure-iothub (Registry over HTTPS, Client over AMQP with the feedback
// receiver) and azure-iot-device with each transport (Mqtt, MqttWs, Amqp, AmqpWs, Http),
// unchanged, pointed at the emulator with the connection string and CA trust only.
//
//   node scenarios.js <scenario>     (node scenarios.js --list prints the names)
//
// Prints one `RESULT PASS` or `RESULT FAIL <reason>` line on stdout; diagnostics go to stderr.
//
// Environment (set by run.sh):
//   IOTHUB_CONNECTION_STRING  the iothubowner connection string the emulator printed
//   IOTHUB_CA_CERT            the emulator's CA (PEM file): device clients get it by setOptions({ ca })
//   NODE_EXTRA_CA_CERTS       the same CA: the only way azure-iothub (Registry, Client) trusts a CA
'use strict';

const {
  DeviceClient,
  Message,
  Mqtt,
  MqttWs,
  Amqp,
  AmqpWs,
  Http,
  ServiceClient,
  Registry,
  deviceErrors,
  NoRetry,
  ScenarioFailure,
  TRICKY_VALUE,
  WAIT_MS,
  c2dMessage,
  caPem,
  check,
  control,
  createDevice,
  crypto,
  customProp,
  describe,
  deviceConnectionString,
  deviceOptions,
  expectError,
  feedbackCollector,
  flushFeedback,
  fs,
  hostName,
  https,
  log,
  messageQueue,
  onCleanup,
  openDevice,
  openService,
  parseConnectionString,
  serviceConnectionString,
  serviceErrors,
  serviceSasToken,
  uniqueId,
  withTimeout,
  run,
} = require('./common');

// --- scenarios ---

async function scenarioRegistry() {
  const registry = Registry.fromConnectionString(serviceConnectionString());
  const deviceId = uniqueId('node-reg');
  const { responseBody: created } = await registry.create({ deviceId });
  log('created', JSON.stringify(created));
  check(created.deviceId === deviceId, `create returned ${created.deviceId}`);
  const keys = created.authentication && created.authentication.symmetricKey;
  check(keys && keys.primaryKey && keys.secondaryKey, `no generated keys: ${JSON.stringify(created.authentication)}`);
  onCleanup(() => registry.delete(deviceId).catch(() => {}));

  const { responseBody: got } = await registry.get(deviceId);
  check(got.deviceId === deviceId && got.authentication.symmetricKey.primaryKey === keys.primaryKey, `get returned ${JSON.stringify(got)}`);
  check(got.status === 'enabled', `status after create: ${got.status}`);

  got.status = 'disabled';
  got.statusReason = 'sdk-compat';
  const { responseBody: updated } = await registry.update(got);
  check(updated.status === 'disabled', `update returned status ${updated.status}`);
  check(updated.authentication.symmetricKey.primaryKey === keys.primaryKey, 'update changed the keys');
  const { responseBody: again } = await registry.get(deviceId);
  check(again.status === 'disabled', `get after update: status ${again.status}`);

  const { responseBody: list } = await registry.list();
  check(Array.isArray(list) && list.some((d) => d.deviceId === deviceId), `list does not contain ${deviceId}: ${JSON.stringify(list).slice(0, 300)}`);

  await expectError(registry.create({ deviceId }), serviceErrors.DeviceAlreadyExistsError, 'duplicate create');
  await registry.delete(deviceId);
  await expectError(registry.get(deviceId), serviceErrors.DeviceNotFoundError, 'get after delete');
  await expectError(registry.delete(deviceId), serviceErrors.DeviceNotFoundError, 'delete after delete');
}

function scenarioC2d(Transport, label) {
  return async () => {
    const registry = Registry.fromConnectionString(serviceConnectionString());
    const { deviceId, key } = await createDevice(registry, `node-${label.toLowerCase()}`);
    onCleanup(() => registry.delete(deviceId).catch(() => {}));
    const service = await openService();
    onCleanup(() => service.close().catch(() => {}));
    const feedback = await feedbackCollector(service);
    const device = await openDevice(deviceId, key, Transport);
    onCleanup(() => device.close().catch(() => {}));
    const inbox = messageQueue(device);

    const sent = c2dMessage(label);
    await service.send(deviceId, sent);
    log('sent', sent.messageId);
    const msg = await inbox.next();
    const problems = [];
    if (msg.messageId !== sent.messageId) problems.push(`messageId ${JSON.stringify(msg.messageId)}, want ${sent.messageId}`);
    if (msg.correlationId !== sent.correlationId) problems.push(`correlationId ${JSON.stringify(msg.correlationId)}, want ${sent.correlationId}`);
    if (String(msg.data) !== String(sent.data)) problems.push(`data ${JSON.stringify(String(msg.data))}`);
    const prop = customProp(msg, Transport);
    if (prop !== TRICKY_VALUE) problems.push(`custom-prop ${JSON.stringify(prop)}, want ${JSON.stringify(TRICKY_VALUE)} (properties ${JSON.stringify(msg.properties.propertyList)})`);
    check(problems.length === 0, `the device saw: ${problems.join('; ')}`);

    await device.complete(msg);
    const record = await feedback.waitFor((r) => r.originalMessageId === sent.messageId, 'Success');
    check(record.statusCode === 'Success' && record.deviceId === deviceId, `feedback record ${JSON.stringify(record)}`);
  };
}

function scenarioAbandonReject(Transport, label) {
  return async () => {
    const registry = Registry.fromConnectionString(serviceConnectionString());
    const { deviceId, key } = await createDevice(registry, `node-rej-${label.toLowerCase()}`);
    onCleanup(() => registry.delete(deviceId).catch(() => {}));
    const service = await openService();
    onCleanup(() => service.close().catch(() => {}));
    const feedback = await feedbackCollector(service);
    const device = await openDevice(deviceId, key, Transport);
    onCleanup(() => device.close().catch(() => {}));
    const inbox = messageQueue(device);

    const sent = c2dMessage(label);
    await service.send(deviceId, sent);
    const first = await inbox.next('the device received no C2D message');
    check(first.messageId === sent.messageId, `first delivery has messageId ${first.messageId}`);
    await device.abandon(first);
    const second = await inbox.next('the abandoned message was not redelivered');
    check(second.messageId === sent.messageId, `redelivery has messageId ${second.messageId}, want ${sent.messageId}`);
    await device.reject(second);
    const record = await feedback.waitFor((r) => r.originalMessageId === sent.messageId, 'Rejected');
    check(record.statusCode === 'Rejected' && record.deviceId === deviceId, `feedback record ${JSON.stringify(record)}`);
  };
}

async function scenarioWrongKey() {
  const registry = Registry.fromConnectionString(serviceConnectionString());
  const { deviceId } = await createDevice(registry, 'node-badkey');
  onCleanup(() => registry.delete(deviceId).catch(() => {}));
  const wrongKey = crypto.randomBytes(32).toString('base64');
  const failures = [];
  for (const [Transport, label] of [[Mqtt, 'Mqtt'], [Amqp, 'Amqp'], [Http, 'Http']]) {
    const client = DeviceClient.fromConnectionString(deviceConnectionString(deviceId, wrongKey), Transport);
    client.setRetryPolicy(new NoRetry());
    client.on('error', (err) => log(`${label} client error:`, describe(err)));
    try {
      await client.setOptions(deviceOptions(Transport));
      // Http has no connection: the first request carries the token.
      const attempt = Transport === Http ? client.open().then(() => client.sendEvent(new Message('x'))) : client.open();
      await withTimeout(expectError(attempt, deviceErrors.UnauthorizedError, `${label} with a wrong key`), WAIT_MS, `${label} with a wrong key did not answer`);
    } catch (err) {
      failures.push(`${label}: ${err.message}`);
    } finally {
      await client.close().catch(() => {});
    }
  }
  check(failures.length === 0, failures.join('; '));
}

async function scenarioQueueFull() {
  const registry = Registry.fromConnectionString(serviceConnectionString());
  const { deviceId } = await createDevice(registry, 'node-full');
  onCleanup(() => registry.delete(deviceId).catch(() => {}));
  const service = await openService();
  onCleanup(() => service.close().catch(() => {}));
  for (let i = 1; i <= 50; i++) {
    try {
      await service.send(deviceId, new Message(`message ${i}`));
    } catch (err) {
      throw new ScenarioFailure(`send ${i} of 50 failed: ${describe(err)}`);
    }
  }
  const err = await expectError(service.send(deviceId, new Message('message 51')), serviceErrors.DeviceMaximumQueueDepthExceededError, 'the 51st send');
  log('51st send error:', describe(err));
}

async function scenarioExpired() {
  const registry = Registry.fromConnectionString(serviceConnectionString());
  const { deviceId } = await createDevice(registry, 'node-exp');
  onCleanup(() => registry.delete(deviceId).catch(() => {}));
  const service = await openService();
  onCleanup(() => service.close().catch(() => {}));
  const feedback = await feedbackCollector(service);
  const sent = c2dMessage('expiry');
  await service.send(deviceId, sent); // no expiryTimeUtc: the hub's default TTL applies
  const ttl = Number(process.env.SDK_COMPAT_DEFAULT_TTL_SECS || 3600);
  const advance = await control('POST', `clock/advance?seconds=${ttl + 1}`);
  check(advance.status >= 200 && advance.status < 300, `clock advance answered ${advance.status} ${advance.body}`);
  const record = await feedback.waitFor((r) => r.originalMessageId === sent.messageId, 'Expired');
  check(record.statusCode === 'Expired' && record.deviceId === deviceId, `feedback record ${JSON.stringify(record)}`);
}

const SCENARIOS = {
  registry: scenarioRegistry,
  'c2d-mqtt': scenarioC2d(Mqtt, 'Mqtt'),
  'c2d-mqtt-ws': scenarioC2d(MqttWs, 'MqttWs'),
  'c2d-amqp': scenarioC2d(Amqp, 'Amqp'),
  'c2d-amqp-ws': scenarioC2d(AmqpWs, 'AmqpWs'),
  'c2d-http': scenarioC2d(Http, 'Http'),
  'abandon-reject-amqp': scenarioAbandonReject(Amqp, 'Amqp'),
  'abandon-reject-http': scenarioAbandonReject(Http, 'Http'),
  'wrong-key': scenarioWrongKey,
  'queue-full': scenarioQueueFull,
  expired: scenarioExpired,
};

run(SCENARIOS);
