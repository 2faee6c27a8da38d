// The IoT Hub emulator dashboard. Plain DOM, no framework, no build step.
// Everything shown comes from /dashboard/api/*; every change is a POST with the CSRF token.
// Text from the hub is only ever placed with textContent, never parsed as HTML.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const PAGE_SIZE = 50;
const FEED_MAX = 200;

const $ = (id) => document.getElementById(id);
const state = {
  pages: [null],        // the `after` cursor of each page seen so far; last = current page
  nextAfter: null,
  filter: "",
  selected: null,       // the open device id
  device: null,         // its last detail answer
  overview: null,
  feedPaused: false,
  hooks: [],            // extra panels (twins, methods): { render(detail), refresh(id) }
};

// ---- helpers ---------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function time(iso) {
  if (!iso || iso.startsWith("0001-")) return "never";
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function toast(text, isError) {
  const m = el("div", { class: "msg" + (isError ? " error" : ""), role: isError ? "alert" : null, text });
  $("toast").append(m);
  setTimeout(() => m.remove(), isError ? 8000 : 3500);
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, body) {
  const opt = body === undefined ? { headers: {} } : {
    method: "POST",
    headers: { "content-type": "application/json", "x-csrf-token": CSRF },
    body: JSON.stringify(body),
  };
  opt.credentials = "same-origin";
  const r = await fetch("/dashboard/api/" + path, opt);
  const j = await r.json().catch(() => null);
  if (!r.ok) {
    let msg = (j && (j.error || j.ExceptionMessage || j.Message)) || ("HTTP " + r.status);
    if (r.status === 401) msg = "The session ended (the emulator restarted?). Open the dashboard URL it printed at start.";
    throw new ApiError(r.status, msg);
  }
  return j;
}

// Runs a change; shows its error; re-reads what the page shows.
async function act(what, path, body, after) {
  try {
    const r = await api(path, body);
    if (what) toast(what);
    if (after) after(r);
    refresh();
    return r;
  } catch (e) {
    toast(e.message, true);
    return null;
  }
}

// A button that asks for a second press within 4 s before it acts (no modal dialogs).
function armed(button, label, run) {
  let timer = null;
  const original = button.textContent;
  button.addEventListener("click", () => {
    if (button.classList.contains("armed")) {
      clearTimeout(timer);
      button.classList.remove("armed");
      button.textContent = original;
      run();
    } else {
      button.classList.add("armed");
      button.textContent = label;
      timer = setTimeout(() => { button.classList.remove("armed"); button.textContent = original; }, 4000);
    }
  });
}

// Re-reads at most once at a time; a request during a read runs once more afterwards.
function coalesced(fn) {
  let running = false, again = false;
  return async function run() {
    if (running) { again = true; return; }
    running = true;
    try { await fn(); } catch (e) { if (e.status === 401) toast(e.message, true); }
    running = false;
    if (again) { again = false; run(); }
  };
}

// ---- overview and settings ---------------------------------------------------------------

const loadOverview = coalesced(async () => {
  const o = await api("overview");
  state.overview = o;
  $("now").textContent = new Date(o.now).toLocaleString([], { hour12: false });
  $("now").dateTime = o.now;
  $("clock-form").hidden = !o.virtualClock;
  const s = $("settings");
  s.replaceChildren();
  const rows = [
    ["Hub name", o.hubName], ["Host name", o.hostName],
    ["Ports", `HTTPS ${o.endpoints.https} · MQTT ${o.endpoints.mqtt} · AMQP ${o.endpoints.amqp} · HTTP ${o.endpoints.http}`],
    ["Devices", o.deviceCount], ["Open device connections", o.connectionCount],
    ["Clock", o.virtualClock ? "virtual (can be advanced)" : "real time"],
    ["C2D queue depth", o.settings.queueDepth], ["C2D default TTL", o.settings.defaultTtlSeconds + " s"],
    ["C2D lock duration", o.settings.lockDurationSeconds + " s"], ["C2D max deliveries", o.settings.maxDeliveryCount],
    ["Delivery count rule", o.settings.deliveryCountRule],
    ["Feedback window", o.settings.feedbackWindowSeconds + " s"], ["Feedback batch size", o.settings.feedbackBatchSize],
    ["Feedback TTL", o.settings.feedbackTtlSeconds + " s"], ["Feedback lock", o.settings.feedbackLockDurationSeconds + " s"],
    ["Telemetry kept per device", o.settings.d2cRetention],
  ];
  for (const [k, v] of rows) s.append(el("dt", { text: k }), el("dd", { text: String(v) }));
});

// ---- devices -------------------------------------------------------------------------------

const loadDevices = coalesced(async () => {
  const after = state.pages[state.pages.length - 1];
  const q = new URLSearchParams({ limit: PAGE_SIZE });
  if (after) q.set("after", after);
  if (state.filter) q.set("filter", state.filter);
  const r = await api("devices?" + q);
  state.nextAfter = r.nextAfter;
  renderDevices(r);
});

function renderDevices(r) {
  const tbody = $("devices").tBodies[0];
  const focusedId = document.activeElement && document.activeElement.dataset.deviceId;
  const rows = r.devices.map((d) => {
    const open = el("button", { class: "link mono", type: "button", dataset: { deviceId: d.deviceId },
      onclick: () => select(d.deviceId), onkeydown: rowKeys, text: d.deviceId });
    const toggle = el("button", { type: "button", text: d.status === "enabled" ? "Disable" : "Enable",
      "aria-label": (d.status === "enabled" ? "Disable " : "Enable ") + d.deviceId,
      onclick: () => act(null, "device/status", { deviceId: d.deviceId, enabled: d.status !== "enabled" }) });
    return el("tr", { class: d.deviceId === state.selected ? "selected" : null, dataset: { deviceId: d.deviceId } },
      el("td", {}, open),
      el("td", {}, el("span", { class: "state " + d.status, text: d.status })),
      el("td", {}, el("span", { class: "state " + d.connectionState.toLowerCase(), text: d.connectionState }),
        (r.protocols || {})[d.deviceId] ? el("span", { class: "proto", text: " " + r.protocols[d.deviceId].join(", ") }) : ""),
      el("td", { class: "c2d", text: d.cloudToDeviceMessageCount + (d.lockedMessageCount ? ` (${d.lockedMessageCount} locked)` : "") }),
      el("td", { text: d.deviceToCloudMessageCount }),
      el("td", { text: time(d.lastActivityTime) }),
      el("td", {}, el("div", { class: "acts" }, toggle)));
  });
  tbody.replaceChildren(...rows);
  if (!rows.length) {
    tbody.append(el("tr", {}, el("td", { colspan: 7, class: "muted",
      text: state.filter ? "No device id contains that text." : "No devices yet: create one above, or let a test create them." })));
  }
  const first = (state.pages.length - 1) * PAGE_SIZE;
  $("device-total").textContent = `(${r.total})`;
  $("page-info").textContent = r.devices.length
    ? `${first + 1}–${first + r.devices.length}${state.filter ? " (filtered)" : ` of ${r.total}`}` : "";
  $("prev-page").disabled = state.pages.length <= 1;
  $("next-page").disabled = !r.nextAfter;
  if (focusedId) {
    const again = tbody.querySelector(`button[data-device-id="${CSS.escape(focusedId)}"]`);
    if (again) again.focus();
  }
}

// Arrow keys move between the device buttons of the table.
function rowKeys(ev) {
  if (ev.key !== "ArrowDown" && ev.key !== "ArrowUp") return;
  const buttons = [...$("devices").querySelectorAll("tbody button.link")];
  const i = buttons.indexOf(ev.target);
  const next = buttons[i + (ev.key === "ArrowDown" ? 1 : -1)];
  if (next) { next.focus(); ev.preventDefault(); }
}

function select(id) {
  if (state.selected !== id) twinPanel.editing = false;
  state.selected = id;
  for (const tr of $("devices").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.deviceId === id);
  loadDevice();
  $("detail-title").focus();
}

// ---- one device ----------------------------------------------------------------------------

const loadDevice = coalesced(async () => {
  const id = state.selected;
  if (!id) return;
  try {
    const r = await api("device?" + new URLSearchParams({ id }));
    if (state.selected !== id) return;
    state.device = r;
    renderDevice(r);
    for (const h of state.hooks) h.refresh && h.refresh(id);
  } catch (e) {
    if (e.status === 404) { state.selected = null; state.device = null; renderDevice(null); }
    else throw e;
  }
});

function renderDevice(r) {
  $("detail-empty").hidden = !!r;
  $("detail-body").hidden = !r;
  if (!r) { $("detail-title").textContent = "Device"; return; }
  const d = r.device;
  $("detail-title").textContent = "Device " + d.deviceId;
  const facts = [
    ["Status", d.status],
    ["Connection", d.connectionState + ((r.protocols || []).length ? " over " + r.protocols.join(", ") : "")],
    ["Last activity", time(d.lastActivityTime)], ["Generation", d.generationId],
    ["C2D pending", `${r.c2d.length} (${r.lockedMessageCount} locked)`],
  ];
  $("detail-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v ?? "") })]));
  $("conn-string").value = r.connectionString;
  $("toggle-status").textContent = d.status === "enabled" ? "Disable" : "Enable";
  $("queue-count").textContent = `(${r.c2d.length})`;
  const q = $("c2d-queue").tBodies[0];
  q.replaceChildren(...r.c2d.map((m) => el("tr", { dataset: { seq: m.sequenceNumber } },
    el("td", { text: m.sequenceNumber }),
    el("td", {}, el("span", { class: "state " + m.state, text: m.state })),
    el("td", { class: "mono", text: m.messageId ?? "" }),
    el("td", { class: "wrap mono", text: m.bodyText ?? `(binary, base64 ${m.body})` }),
    el("td", { class: "wrap", text: Object.entries(m.properties).map(([k, v]) => `${k}=${v}`).join(", ") }),
    el("td", { text: m.ack }),
    el("td", { text: m.deliveryCount }),
    el("td", { class: "mono", text: m.lockToken ? `${m.lockToken.slice(0, 8)}… until ${time(m.lockedUntil)}` : "", title: m.lockToken ?? null }),
    el("td", { text: time(m.expiresAt) }))));
  if (!r.c2d.length) q.append(el("tr", {}, el("td", { colspan: 9, class: "muted", text: "The queue is empty." })));
  $("telemetry-count").textContent = `(${r.telemetryCount} kept)`;
  $("device-telemetry").replaceChildren(...r.telemetry.map((t) => feedItem(t.receivedAt, d.deviceId, t)));
  for (const h of state.hooks) h.render && h.render(r);
}

function parseProps(text) {
  const props = {};
  for (const line of text.split("\n")) {
    const t = line.trim();
    if (!t) continue;
    const i = t.indexOf("=");
    if (i <= 0) throw new Error(`"${t}" is not name=value`);
    props[t.slice(0, i).trim()] = t.slice(i + 1).trim();
  }
  return props;
}

// ---- telemetry feed and feedback -------------------------------------------------------------

function feedItem(when, who, m) {
  const props = Object.entries(m.properties || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  return el("li", { dataset: { deviceId: who } },
    el("span", { class: "when mono", text: time(when) }),
    el("span", { class: "who mono", text: who }),
    el("span", { class: "what" }, el("span", { class: "mono", text: m.bodyText ?? `(binary, base64 ${m.body})` }),
      props ? el("span", { class: "props", text: "  " + props }) : null));
}

function onTelemetry(batch) {
  if (!state.feedPaused) {
    const feed = $("feed");
    for (const m of batch.messages) {
      const who = m.moduleId ? `${m.deviceId}/${m.moduleId}` : m.deviceId;
      feed.prepend(feedItem(m.enqueuedTime, who, m));
    }
    if (batch.skipped) feed.prepend(el("li", { class: "muted", text: `… ${batch.skipped} more messages skipped (too many to show)` }));
    while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  }
  if (state.selected && batch.messages.some((m) => m.deviceId === state.selected)) loadDevice();
}

const loadFeedback = coalesced(async () => {
  const f = await api("feedback");
  const box = $("feedback");
  const record = (r) => el("tr", {},
    el("td", { class: "mono", text: r.originalMessageId }), el("td", { class: "mono", text: r.deviceId }),
    el("td", {}, el("span", { class: "state", text: r.statusCode || r.description })),
    el("td", { text: time(r.enqueuedTimeUtc) }));
  const table = (records) => el("table", { class: "feedback-records" },
    el("thead", {}, el("tr", {}, ...["Original message", "Device", "Outcome", "When"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...records.map(record)));
  const parts = [];
  parts.push(el("h3", { text: `Waiting for the batch window (${f.pending.length})` }));
  if (f.pending.length) parts.push(table(f.pending));
  parts.push(el("h3", { text: `Released batches (${f.batches.length})` }));
  if (!f.batches.length) parts.push(el("p", { class: "muted", text: "No feedback waiting for the service." }));
  for (const b of f.batches) {
    parts.push(el("p", { class: "muted small",
      text: `Released ${time(b.enqueuedTime)} · ${b.records.length} records · deliveries ${b.deliveryCount}` +
        (b.lockToken ? ` · locked until ${time(b.lockedUntil)}` : "") }));
    parts.push(table(b.records));
  }
  box.replaceChildren(...parts);
});

// ---- live updates ----------------------------------------------------------------------------

function refresh(feedback = true) {
  loadOverview();
  loadDevices();
  loadDevice();
  if (feedback) loadFeedback();
}

function connectLive() {
  const live = $("live");
  const es = new EventSource("/dashboard/api/events");
  es.addEventListener("hello", () => { live.textContent = "live"; live.className = "pill on"; refresh(); });
  es.addEventListener("changed", (ev) => {
    const c = JSON.parse(ev.data);
    refresh(c.feedback);
  });
  es.addEventListener("telemetry", (ev) => onTelemetry(JSON.parse(ev.data)));
  es.onerror = () => { live.textContent = "reconnecting…"; live.className = "pill off"; };
}

// ---- wiring ----------------------------------------------------------------------------------

function wire() {
  $("detail-title").tabIndex = -1;
  $("create-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = $("create-id").value.trim();
    if (!id) return;
    act(`Created ${id}`, "devices/create", { deviceId: id }, () => { $("create-id").value = ""; select(id); });
  });
  let filterTimer = null;
  $("device-filter").addEventListener("input", (ev) => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => { state.filter = ev.target.value.trim(); state.pages = [null]; loadDevices(); }, 150);
  });
  $("next-page").addEventListener("click", () => { if (state.nextAfter) { state.pages.push(state.nextAfter); loadDevices(); } });
  $("prev-page").addEventListener("click", () => { if (state.pages.length > 1) { state.pages.pop(); loadDevices(); } });
  $("copy-conn").addEventListener("click", async () => {
    const input = $("conn-string");
    try { await navigator.clipboard.writeText(input.value); toast("Connection string copied"); }
    catch { input.select(); toast("Press Ctrl+C to copy the selected connection string"); }
  });
  $("toggle-status").addEventListener("click", () => {
    const d = state.device && state.device.device;
    if (d) act(null, "device/status", { deviceId: d.deviceId, enabled: d.status !== "enabled" });
  });
  $("disconnect").addEventListener("click", () =>
    act(null, "device/disconnect", { deviceId: state.selected }, (r) => toast(`Closed ${r.connectionsClosed} connection(s)`)));
  armed($("purge"), "Press again to purge", () =>
    act(null, "c2d/purge", { deviceId: state.selected }, (r) => toast(`Purged ${r.totalMessagesPurged} message(s)`)));
  armed($("delete"), "Press again to delete", () => {
    const id = state.selected;
    act(`Deleted ${id}`, "device/delete", { deviceId: id }, () => { state.selected = null; renderDevice(null); });
  });
  armed($("reset"), "Press again: remove everything", () => act("Hub reset", "reset", {}, () => { state.selected = null; renderDevice(null); }));
  $("c2d-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    let properties;
    try { properties = parseProps($("c2d-props").value); } catch (e) { toast(e.message, true); return; }
    act(null, "c2d/send", {
      deviceId: state.selected, body: $("c2d-body").value, messageId: $("c2d-id").value.trim() || null,
      ack: $("c2d-ack").value, properties,
    }, (r) => { toast(`Sent ${r.messageId} (#${r.sequenceNumber})`); $("c2d-body").value = ""; $("c2d-id").value = ""; });
  });
  $("clock-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(null, "clock/advance", { seconds: Number($("clock-seconds").value) }, (r) => toast("Clock now " + r.now));
  });
  $("flush-feedback").addEventListener("click", () => act("Feedback released", "feedback/flush", {}));
  $("feed-pause").addEventListener("click", (ev) => {
    state.feedPaused = !state.feedPaused;
    ev.target.setAttribute("aria-pressed", String(state.feedPaused));
    ev.target.textContent = state.feedPaused ? "Resume" : "Pause";
  });
  $("feed-clear").addEventListener("click", () => $("feed").replaceChildren());
  document.addEventListener("keydown", (ev) => {
    const typing = ev.target.closest && ev.target.closest("input, textarea, select");
    if (ev.key === "/" && !typing) { ev.preventDefault(); $("device-filter").focus(); }
  });
}

// ---- twin and direct methods -----------------------------------------------------------------

// Keys the hub writes itself ($version, $metadata) are not sent back in a patch.
function withoutMeta(v) {
  if (!v || typeof v !== "object" || Array.isArray(v)) return v;
  const out = {};
  for (const [k, x] of Object.entries(v)) if (!k.startsWith("$")) out[k] = withoutMeta(x);
  return out;
}

const twinPanel = {
  etag: null,
  editing: false,
  build() {
    const box = $("twin-section");
    box.hidden = false;
    box.append(
      el("h3", { id: "twin-title" }, "Device twin ", el("span", { id: "twin-version", class: "muted" })),
      el("div", { class: "cols" },
        el("div", {},
          el("label", { for: "twin-desired", text: "Desired properties (JSON, merged as a patch; null removes)" }),
          el("textarea", { id: "twin-desired", rows: 6, class: "mono", spellcheck: "false",
            oninput: () => { twinPanel.editing = true; } }),
          el("div", { class: "inline" },
            el("button", { id: "twin-save", type: "button", class: "primary", text: "Update desired", onclick: () => twinPanel.save() }),
            el("button", { id: "twin-revert", type: "button", text: "Revert", onclick: () => { twinPanel.editing = false; twinPanel.refresh(state.selected); } }))),
        el("div", {},
          el("label", { for: "twin-reported", text: "Reported properties (from the device)" }),
          el("pre", { id: "twin-reported", tabindex: 0, class: "twin-json" }),
          el("label", { for: "twin-tags", text: "Tags" }),
          el("pre", { id: "twin-tags", tabindex: 0, class: "twin-json" }))));
  },
  async refresh(id) {
    let t;
    try { t = await api("twin?" + new URLSearchParams({ id })); } catch (e) { if (e.status === 404) return; throw e; }
    if (state.selected !== id) return;
    this.etag = t.etag;
    const p = t.properties || {};
    $("twin-version").textContent = `(version ${t.version ?? "?"}, desired $version ${p.desired?.$version ?? "?"}, reported $version ${p.reported?.$version ?? "?"})`;
    if (!this.editing) $("twin-desired").value = JSON.stringify(withoutMeta(p.desired || {}), null, 2);
    $("twin-reported").textContent = JSON.stringify(withoutMeta(p.reported || {}), null, 2);
    $("twin-tags").textContent = JSON.stringify(t.tags || {}, null, 2);
  },
  async save() {
    let desired;
    try { desired = JSON.parse($("twin-desired").value || "{}"); } catch (e) { toast("Desired properties: " + e.message, true); return; }
    const r = await act("Desired properties updated", "twin/desired", { deviceId: state.selected, desired, etag: this.etag });
    if (r) { this.editing = false; this.refresh(state.selected); }
  },
};

const methodPanel = {
  build() {
    const box = $("methods-section");
    box.hidden = false;
    const form = el("form", { id: "method-form", class: "card" },
      el("h3", { id: "methods-title", text: "Invoke a direct method" }),
      el("div", { class: "cols" },
        el("div", {}, el("label", { for: "method-name", text: "Method name" }), el("input", { id: "method-name", required: true, placeholder: "reboot" })),
        el("div", { class: "cols" },
          el("div", {}, el("label", { for: "method-response-timeout", text: "Response timeout (s)" }), el("input", { id: "method-response-timeout", type: "number", min: 5, max: 25, value: 10 })),
          el("div", {}, el("label", { for: "method-connect-timeout", text: "Connect timeout (s)" }), el("input", { id: "method-connect-timeout", type: "number", min: 0, max: 20, value: 0 })))),
      el("label", { for: "method-payload", text: "Payload (JSON)" }),
      el("textarea", { id: "method-payload", rows: 2, class: "mono", spellcheck: "false", placeholder: '{"delay": 5}' }),
      el("button", { id: "method-invoke", type: "submit", text: "Invoke" }),
      el("pre", { id: "method-result", class: "twin-json", "aria-live": "polite" }));
    form.addEventListener("submit", (ev) => { ev.preventDefault(); methodPanel.invoke(); });
    box.append(form);
  },
  async invoke() {
    let payload = null;
    const text = $("method-payload").value.trim();
    if (text) { try { payload = JSON.parse(text); } catch (e) { toast("Payload: " + e.message, true); return; } }
    const call = {
      methodName: $("method-name").value.trim(), payload,
      responseTimeoutInSeconds: Number($("method-response-timeout").value),
      connectTimeoutInSeconds: Number($("method-connect-timeout").value),
    };
    const out = $("method-result");
    out.textContent = "waiting for the device…";
    try {
      const r = await api("method/invoke", { deviceId: state.selected, call });
      out.textContent = `status ${r.status}\n` + JSON.stringify(r.payload, null, 2);
    } catch (e) {
      out.textContent = e.message;
    }
  },
};

twinPanel.build();
methodPanel.build();
state.hooks.push({ refresh: (id) => twinPanel.refresh(id) });

// Further panels (modules, say) register here: `hooks.push({ render(detail), refresh(id) })`.
window.dashboard = { state, api, act, el, hooks: state.hooks, toast };

wire();
refresh();
connectLive();
