// Shared helpers for the Node scenario files (scenarios.js and each feature's own file): the
// SDK modules, connection strings and CA trust from the environment run.sh sets, checks,
// timeouts, cleanups, and `run(SCENARIOS)`, the entry point that prints one RESULT line.
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

function finish(line, code) {
  process.stdout.write(line + '\n', () => process.exit(code));
}

async function run(SCENARIOS) {
  const name = process.argv[2];
  if (name === '--list') {
    console.log(Object.keys(SCENARIOS).join('\n'));
    return;
  }
  if (!SCENARIOS[name]) {
    console.error(`usage: node ${require('path').basename(process.argv[1])} <${Object.keys(SCENARIOS).join('|')}>`);
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


module.exports = {
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
  cleanups,
  control,
  createDevice,
  crypto,
  customProp,
  describe,
  deviceConnectionString,
  deviceOptions,
  expectError,
  feedbackCollector,
  finish,
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
  run,
  serviceConnectionString,
  serviceErrors,
  serviceSasToken,
  uniqueId,
  withTimeout,
};
