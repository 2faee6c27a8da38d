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

const crypto = require('crypto');
const fs = require('fs');
const https = require('https');

const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');
const { Http } = require('azure-iot-device-http');
const { Client: ServiceClient, Registry } = require('azure-iothub');
const serviceErrors = require('azure-iothub/dist/common-core/errors');
const { errors: deviceErrors, NoRetry } = require('azure-iot-common');

// A custom property value with spaces and every character that has a meaning in a URL query or
// an MQTT property bag.
const TRICKY_VALUE = 'a value with spaces & = / ? and more';
const WAIT_MS = 20000;

class ScenarioFailure extends Error {}

function log(...args) {
  console.error(new Date().toISOString(), ...args);
}

function check(condition, reason) {
  if (!condition) throw new ScenarioFailure(reason);
}

function serviceConnectionString() {
  return process.env.IOTHUB_CONNECTION_STRING;
}

function parseConnectionString(cs) {
  const parts = {};
  for (const item of cs.split(';')) {
    if (!item) continue;
    const i = item.indexOf('=');
    parts[item.slice(0, i)] = item.slice(i + 1);
  }
  return parts;
}

function hostName() {
  return parseConnectionString(serviceConnectionString()).HostName;
}

function caPem() {
  return fs.readFileSync(process.env.IOTHUB_CA_CERT, 'utf8');
}

function uniqueId(prefix) {
  return `${prefix}-${crypto.randomBytes(5).toString('hex')}`;
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new ScenarioFailure(`${what} (waited ${ms / 1000} s)`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function describe(err) {
  if (!err) return String(err);
  const name = (err.constructor && err.constructor.name) || err.name;
  let text = `${name}: ${err.message}`;
  if (err.amqpError) text += ` [amqp ${JSON.stringify(err.amqpError.condition || err.amqpError)}]`;
  if (err.response && err.response.statusCode) text += ` [HTTP ${err.response.statusCode}]`;
  if (err.responseBody) text += ` [body ${String(err.responseBody).slice(0, 300)}]`;
  return text;
}

// Expects `promise` to reject with an error of class `Type` (checked by class and by name, since
// azure-iothub vendors its own copy of the error classes).
async function expectError(promise, Type, what) {
  let result;
  try {
    result = await promise;
  } catch (err) {
    log(`${what} failed as expected?`, describe(err));
    check(
      err instanceof Type || (err && err.constructor && err.constructor.name === Type.name),
      `${what}: expected ${Type.name}, got ${describe(err)}`
    );
    return err;
  }
  throw new ScenarioFailure(`${what}: expected ${Type.name}, but it succeeded: ${JSON.stringify(result && result.responseBody)}`);
}

// --- the emulator's test-control API (iothubowner SAS, trusted through NODE_EXTRA_CA_CERTS) ---

function serviceSasToken(ttlSecs = 3600) {
  const cs = parseConnectionString(serviceConnectionString());
  const sr = encodeURIComponent(cs.HostName);
  const se = Math.floor(Date.now() / 1000) + ttlSecs;
  const sig = crypto
    .createHmac('sha256', Buffer.from(cs.SharedAccessKey, 'base64'))
    .update(`${sr}\n${se}`)
    .digest('base64');
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}&skn=${cs.SharedAccessKeyName}`;
}

function control(method, path) {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: hostName(), port: 443, method, path: `/_emulator/${path}`, headers: { Authorization: serviceSasToken(), 'Content-Length': 0 }, timeout: 10000 },
      (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => {
          log(`control ${method} ${path} -> ${res.statusCode} ${body.slice(0, 200)}`);
          resolve({ status: res.statusCode, body });
        });
      }
    );
    req.on('timeout', () => req.destroy(new Error('control API timed out')));
    req.on('error', reject);
    req.end();
  });
}

async function flushFeedback() {
  try {
    await control('POST', 'feedback/flush');
  } catch (err) {
    log('feedback flush failed (ignored):', describe(err));
  }
}

// --- helpers around the SDKs ---

async function createDevice(registry, prefix) {
  const deviceId = uniqueId(prefix);
  const { responseBody } = await registry.create({ deviceId });
  const key = responseBody.authentication && responseBody.authentication.symmetricKey && responseBody.authentication.symmetricKey.primaryKey;
  check(key, `created ${deviceId} without a generated primary key: ${JSON.stringify(responseBody)}`);
  return { deviceId, key };
}

function deviceConnectionString(deviceId, key) {
  return `HostName=${hostName()};DeviceId=${deviceId};SharedAccessKey=${key}`;
}

// The CA goes in by setOptions({ ca }). azure-iot-device-http 1.14.4 applies it but only calls
// back when the options also carry `http.receivePolicy` (dist/http.js setOptions), so a bare
// { ca } never resolves over Http: give Http its (default) receive policy too.
function deviceOptions(Transport) {
  const options = { ca: caPem() };
  if (Transport === Http) options.http = { receivePolicy: { interval: 1 } };
  return options;
}

async function openDevice(deviceId, key, Transport) {
  const client = DeviceClient.fromConnectionString(deviceConnectionString(deviceId, key), Transport);
  client.setRetryPolicy(new NoRetry());
  client.on('error', (err) => log('device client error:', describe(err)));
  client.on('disconnect', (err) => log('device client disconnect:', describe(err)));
  await client.setOptions(deviceOptions(Transport));
  await client.open();
  return client;
}

// Queues the C2D messages a device client receives; `next()` waits for the next one.
function messageQueue(client) {
  const messages = [];
  const waiters = [];
  client.on('message', (msg) => {
    log('device received:', JSON.stringify({ messageId: msg.messageId, correlationId: msg.correlationId, data: msg.data && msg.data.toString(), properties: msg.properties && msg.properties.propertyList }));
    const w = waiters.shift();
    if (w) w(msg);
    else messages.push(msg);
  });
  return {
    next(what) {
      const p = messages.length ? Promise.resolve(messages.shift()) : new Promise((resolve) => waiters.push(resolve));
      return withTimeout(p, WAIT_MS, what || 'the device received no C2D message');
    },
  };
}

async function openService() {
  const service = ServiceClient.fromConnectionString(serviceConnectionString());
  service.setRetryPolicy(new NoRetry());
  service.on('error', (err) => log('service client error:', describe(err)));
  await service.open();
  return service;
}

// Collects feedback records from the AMQP feedback receiver, completing every batch.
async function feedbackCollector(service) {
  const receiver = await new Promise((resolve, reject) => {
    service.getFeedbackReceiver((err, r) => (err ? reject(err) : resolve(r)));
  });
  const records = [];
  const listeners = [];
  receiver.on('errorReceived', (err) => log('feedback receiver error:', describe(err)));
  receiver.on('message', (msg) => {
    const text = msg.data ? msg.data.toString() : '';
    log('feedback batch:', text, 'contentType', msg.contentType);
    let batch = [];
    try {
      batch = JSON.parse(text);
    } catch (err) {
      log('feedback body is not JSON:', describe(err));
    }
    receiver.complete(msg, (err) => err && log('feedback complete failed:', describe(err)));
    for (const record of Array.isArray(batch) ? batch : []) {
      records.push(record);
      for (const l of listeners.slice()) l(record);
    }
  });
  return {
    async waitFor(predicate, what) {
      const found = records.find(predicate);
      if (found) return found;
      const flusher = setInterval(flushFeedback, 1000);
      try {
        return await withTimeout(
          new Promise((resolve) => {
            const l = (record) => {
              if (predicate(record)) {
                listeners.splice(listeners.indexOf(l), 1);
                resolve(record);
              }
            };
            listeners.push(l);
          }),
          WAIT_MS,
          `${what}: no matching feedback record on the AMQP feedback receiver; records seen: ${JSON.stringify(records)}`
        );
      } finally {
        clearInterval(flusher);
      }
    },
  };
}

function c2dMessage(label) {
  const msg = new Message(JSON.stringify({ from: 'azure-iothub', transport: label }));
  msg.messageId = crypto.randomUUID(); // uuid-shaped: azure-iothub sends it as an AMQP uuid
  msg.correlationId = `node-cid-${crypto.randomBytes(6).toString('hex')}`;
  msg.ack = 'full';
  msg.properties.add('custom-prop', TRICKY_VALUE);
  return msg;
}

// Azure-iot-device-http keeps the whole header name (iothub-app-custom-prop) as the key.
function customProp(msg, Transport) {
  const v = msg.properties.getValue('custom-prop');
  if (v !== undefined || Transport !== Http) return v;
  return msg.properties.getValue('iothub-app-custom-prop');
}

const cleanups = [];
function onCleanup(fn) {
  cleanups.unshift(fn);
}

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

function finish(line, code) {
  process.stdout.write(line + '\n', () => process.exit(code));
}

async function main() {
  const name = process.argv[2];
  if (name === '--list') {
    console.log(Object.keys(SCENARIOS).join('\n'));
    return;
  }
  if (!SCENARIOS[name]) {
    console.error(`usage: node scenarios.js <${Object.keys(SCENARIOS).join('|')}>`);
    process.exit(2);
  }
  process.on('unhandledRejection', (err) => log('unhandled rejection:', describe(err), err && err.stack));
  // Node exits when nothing is left to wait for: a promise that can never settle.
  let done = false;
  process.on('beforeExit', () => {
    if (!done) finish('RESULT FAIL the scenario stalled: an SDK call never called back', 1);
  });
  let result;
  try {
    await SCENARIOS[name]();
    result = ['RESULT PASS', 0];
  } catch (err) {
    if (!(err instanceof ScenarioFailure)) log(err && err.stack);
    const reason = err instanceof ScenarioFailure ? err.message : `unexpected ${describe(err)}`;
    result = [`RESULT FAIL ${reason.replace(/\s*\n\s*/g, ' ')}`, 1];
  }
  done = true;
  for (const fn of cleanups) {
    await withTimeout(Promise.resolve().then(fn), 5000, 'cleanup').catch((err) => log('cleanup:', describe(err)));
  }
  finish(...result);
}

main();
