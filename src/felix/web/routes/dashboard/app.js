// The Felix dashboard: a plain ES module, no build step, speaking the public API.
//
// Event data is untrusted input: it reaches the page only through textContent
// and attribute setters, never as HTML. The API key, when the server has one,
// is sent once to POST /dashboard/session and forgotten; after that the
// browser holds an HttpOnly session cookie the page cannot read, and each
// workflow connection uses a subscribe token minted for it.

const DASHBOARD_HEADERS = { "X-Felix-Dashboard": "1" };
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
/** Newest workflows the list shows. */
const LIST_LIMIT = 200;
/** Rows kept in the event log and the outputs list; older ones are dropped from the page. */
const ROW_LIMIT = 2000;
/** Event marks kept on the timeline; the oldest go first beyond this. */
const MARK_LIMIT = 2000;
const STATUSES = ["pending", "running", "completed", "failed", "cancelled"];
/** Reconnection delays: exponential from BASE_DELAY to MAX_DELAY ms, with jitter. */
const BASE_DELAY = 500;
const MAX_DELAY = 15000;

const $ = (id) => document.getElementById(id);

/** An element with text, attributes and children; strings become text nodes, never markup. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, String(value));
  }
  node.append(...children);
  return node;
}

class HttpError extends Error {
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`);
    this.status = status;
  }
}

/** A JSON call to Felix with the dashboard header (which lets the session cookie count). */
async function api(path, { method = "GET", headers = {} } = {}) {
  const response = await fetch(path, {
    method,
    headers: { ...DASHBOARD_HEADERS, ...headers },
    credentials: "same-origin",
    cache: "no-store",
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: the status says enough
  }
  if (!response.ok) throw new HttpError(response.status, body);
  return body;
}

function wsUrl(path, params = {}) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, String(value));
  return url.href;
}

const workflowPath = (id) => `/api/v1/workflows/${encodeURIComponent(id)}`;

// --- the stream's transport ----------------------------------------------------------

/**
 * How the page follows streams: "websocket", or "sse" once a WebSocket failed to open
 * (a proxy that drops Upgrade, a network that blocks it). Server-Sent Events carry the
 * very same frames, so nothing else changes; the page keeps SSE until it is reloaded.
 */
let transport = "websocket";
/** The event names the page reads from an EventSource (it must name each one). */
const SSE_EVENTS = [
  "connected",
  "workflow_created",
  "workflow_status",
  "agent_spawned",
  "agent_output",
  "synthesis",
  "error",
  "completed",
  "close",
];

function sseUrl(path, params = {}) {
  const url = new URL(path, location.href);
  url.hash = "";
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, String(value));
  return url.href;
}

function parsed(text, onframe) {
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    return;
  }
  onframe(frame);
}

/**
 * Open the stream at `path` (below /api/v1/ws/ or /api/v1/sse/): `onframe(frame)` for each
 * frame, then `onend(code, reason)` once, when it ends for whatever reason. The caller
 * reconnects (with its own after=); an EventSource is never left to reconnect by itself.
 * Returns `{close()}`.
 */
function openStream(path, params, onframe, onend) {
  if (transport === "websocket") {
    let ws;
    try {
      ws = new WebSocket(wsUrl(`/api/v1/ws/${path}`, params));
    } catch {
      transport = "sse";
      return openStream(path, params, onframe, onend);
    }
    let opened = false;
    ws.onopen = () => {
      opened = true;
    };
    ws.onmessage = (message) => parsed(message.data, onframe);
    ws.onclose = (event) => {
      if (!opened) transport = "sse"; // the next attempt uses Server-Sent Events
      onend(event.code, event.reason);
    };
    return { close: () => ws.close(1000) };
  }
  const source = new EventSource(sseUrl(`/api/v1/sse/${path}`, params));
  let ended = false;
  const end = (code, reason) => {
    if (ended) return;
    ended = true;
    source.close();
    onend(code, reason);
  };
  for (const name of SSE_EVENTS) {
    source.addEventListener(name, (event) => {
      if (ended) return;
      // A workflow's `error` event is a MessageEvent with data; the EventSource's
      // own connection errors are plain Events without it.
      if (!(event instanceof MessageEvent)) return end(1006, "connection lost");
      if (name !== "close") return parsed(event.data, onframe);
      parsed(event.data, (close) => end(close.code ?? 1006, close.reason ?? ""));
    });
  }
  return { close: () => end(1000, "") };
}

/** Exponential backoff with "equal jitter": half the ceiling, plus up to half again at random. */
class Backoff {
  constructor() {
    this.attempt = 0;
  }
  next() {
    const ceiling = Math.min(MAX_DELAY, BASE_DELAY * 2 ** this.attempt);
    this.attempt += 1;
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }
  reset() {
    this.attempt = 0;
  }
}

/** The status a workflow has after `event`: the server's own rule, applied to the list. */
function nextStatus(status, event) {
  if (event.type === "workflow_status") return event.status;
  if (event.type === "completed") return "completed";
  if (event.type === "error" && event.fatal === true) return "failed";
  return status === "pending" ? "running" : status;
}

/** Seconds since the epoch of an RFC 3339 UTC timestamp, to the microsecond; NaN if malformed. */
function secondsOf(timestamp) {
  const match =
    typeof timestamp === "string" && /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z$/.exec(timestamp);
  if (!match) return NaN;
  // Date.parse keeps milliseconds only: the fraction is added apart.
  return Date.parse(`${match[1]}Z`) / 1000 + (match[2] ? Number(`0${match[2]}`) : 0);
}

/** A duration for people: "350 ms", "12.4 s", "3 min 05 s", "2 h 03 min". */
function durationText(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 59.95) return `${seconds.toFixed(1)} s`;
  const whole = Math.round(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${pad(whole % 60)} s`;
  return `${Math.floor(whole / 3600)} h ${pad(Math.floor((whole % 3600) / 60))} min`;
}

function timeOf(timestamp) {
  return typeof timestamp === "string" ? timestamp.slice(11, 19) : "";
}

function dateTimeOf(timestamp) {
  return typeof timestamp === "string" ? timestamp.slice(0, 19).replace("T", " ") + " UTC" : "";
}

/** Date and time without the zone, for table cells whose header says UTC. */
function shortDateTimeOf(timestamp) {
  return typeof timestamp === "string" ? timestamp.slice(0, 19).replace("T", " ") : "";
}

function statusBadge(status) {
  return el("span", { class: "status", "data-status": status, text: status });
}

function confidenceBar(value) {
  const number = typeof value === "number" && Number.isFinite(value) ? value : 0;
  const clamped = Math.min(1, Math.max(0, number));
  const level = clamped >= 0.75 ? "high" : clamped >= 0.5 ? "mid" : "low";
  const fill = el("span", { class: "fill" });
  fill.style.width = `${Math.round(clamped * 100)}%`; // CSSOM, allowed by the policy
  const bar = el(
    "span",
    {
      class: `bar ${level}`,
      role: "meter",
      "aria-label": "confidence",
      "aria-valuemin": 0,
      "aria-valuemax": 1,
      "aria-valuenow": clamped,
    },
    fill,
  );
  return el("span", { class: "confidence" }, bar, el("span", { class: "value", text: clamped.toFixed(2) }));
}

/** The event's own fields, without the envelope, as compact JSON for the log. */
function fieldsOf(event) {
  const { type, workflow_id: _w, seq: _s, timestamp: _t, ...fields } = event;
  const text = JSON.stringify(fields);
  return text.length > 300 ? `${text.slice(0, 299)}…` : text;
}

// --- page chrome -------------------------------------------------------------------

function setConnection(state, text) {
  const indicator = $("connection");
  indicator.dataset.state = state;
  $("connection-text").textContent = text;
}

/** Live, and over which transport (the indicator's data-transport says it to tests too). */
function setLive() {
  setConnection("live", transport === "sse" ? "live (Server-Sent Events)" : "live");
  $("connection").dataset.transport = transport;
}

const VIEWS = ["sign-in-view", "list-view", "workflow-view", "message-view"];

function showView(id, title) {
  for (const view of VIEWS) $(view).hidden = view !== id;
  document.title = `${title} · Felix`;
}

function showMessage(title, text) {
  $("message-title").textContent = title;
  $("message-text").textContent = text;
  showView("message-view", title);
}

// --- session -------------------------------------------------------------------------

let session = { key_required: false, signed_in: true };

async function loadSession() {
  session = await api("/dashboard/session");
  $("sign-out").hidden = !(session.key_required && session.signed_in);
  return session;
}

function showSignIn(message) {
  setConnection("idle", "signed out");
  $("sign-out").hidden = true;
  const error = $("sign-in-error");
  error.hidden = !message;
  error.textContent = message ?? "";
  showView("sign-in-view", "Sign in");
  $("api-key").focus();
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("api-key");
  const key = input.value.trim();
  input.value = ""; // the field forgets the key as soon as it is sent
  if (!key) {
    showSignIn("Paste an API key.");
    return;
  }
  try {
    await api("/dashboard/session", { method: "POST", headers: { Authorization: `Bearer ${key}` } });
  } catch (error) {
    showSignIn(
      error.status === 401
        ? "That key was not accepted."
        : `Could not sign in: ${error.message || "the server is not reachable"}.`,
    );
    return;
  }
  route();
});

$("sign-out").addEventListener("click", async () => {
  current?.stop();
  current = null;
  try {
    await api("/dashboard/session", { method: "DELETE" });
  } catch {
    // the cookie may be gone already; the page asks the server where it stands
  }
  route();
});

/** A call answered 401: the session expired or the key was removed. */
function signedOut() {
  current?.stop();
  current = null;
  showSignIn("Your session has ended; sign in again.");
}

// --- the list of workflows -----------------------------------------------------------

// What both views share: one stream at a time (a WebSocket, or Server-Sent Events where
// WebSockets fail), opened again with backoff after a drop, until the view is left
// (stop) or has nothing more to follow.
class LiveView {
  constructor() {
    this.backoff = new Backoff();
    this.ws = null;
    this.timer = null;
    this.stopped = false;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.ws?.close(1000);
  }

  // Whether a dropped stream should be opened again (not once it has ended for good).
  resumable() {
    return true;
  }

  // The page became visible or the network came back: reconnect now, not at the timer.
  wake() {
    if (this.ws === null && !this.stopped && this.resumable()) {
      clearTimeout(this.timer);
      this.connect();
    }
  }

  reconnectLater() {
    if (this.stopped) return;
    const delay = this.backoff.next();
    setConnection("reconnecting", `reconnecting in ${Math.ceil(delay / 1000)} s`);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}

/** The workflows' creation time in seconds, for ordering (unknown ones sort last). */
function createdOf(workflow) {
  const seconds = secondsOf(workflow.created_at);
  return Number.isNaN(seconds) ? -Infinity : seconds;
}

/** Whether a page of the list came newest first (asked with order=newest; older servers ignore it). */
function newestFirst(page) {
  if (page.order === "newest" || page.order === "oldest") return page.order === "newest";
  const list = page.workflows;
  return list.length < 2 || createdOf(list[0]) >= createdOf(list[list.length - 1]);
}

/** The list's search and status filter, kept in the hash's query (#/?q=…&status=…). */
function listFilterFromHash() {
  const query = new URLSearchParams(location.hash.split("?")[1] ?? "");
  const status = query.get("status") ?? "";
  return { q: (query.get("q") ?? "").trim(), status: STATUSES.includes(status) ? status : "" };
}

class ListView extends LiveView {
  constructor() {
    super();
    this.rows = new Map(); // workflow_id -> {workflow, agents: Set, tr}
    this.loading = false;
    this.queued = [];
    this.fetching = new Set();
    this.filter = listFilterFromHash();
  }

  start() {
    showView("list-view", "Workflows");
    $("workflows").tBodies[0].replaceChildren();
    $("list-summary").textContent = "Loading…";
    $("list-empty").hidden = true;
    $("list-no-match").hidden = true;
    $("refresh").onclick = () => this.reload();
    $("list-search").value = this.filter.q;
    $("list-status").value = this.filter.status;
    $("list-search").oninput = () => this.filterChanged();
    $("list-status").onchange = () => this.filterChanged();
    $("list-filters").onsubmit = (event) => event.preventDefault();
    this.connect();
  }

  filterChanged() {
    this.filter = { q: $("list-search").value.trim(), status: $("list-status").value };
    const query = new URLSearchParams();
    if (this.filter.q) query.set("q", this.filter.q);
    if (this.filter.status) query.set("status", this.filter.status);
    const text = query.toString();
    const hash = text ? `#/?${text}` : "#/";
    // replaceState, not location.hash: no hashchange, so the view is not rebuilt.
    if (location.hash !== hash) history.replaceState(null, "", hash);
    for (const row of this.rows.values()) row.tr.hidden = !this.matches(row.workflow);
    this.summarise();
  }

  matches(workflow) {
    const { q, status } = this.filter;
    if (status && workflow.status !== status) return false;
    if (!q) return true;
    const needle = q.toLowerCase();
    return (
      workflow.workflow_id.toLowerCase().includes(needle) ||
      (typeof workflow.task === "string" && workflow.task.toLowerCase().includes(needle))
    );
  }

  connect() {
    if (this.stopped) return;
    setConnection(this.backoff.attempt ? "reconnecting" : "connecting", "connecting");
    // The system stream carries every workflow's events: the list follows them
    // instead of polling. The session cookie opens it for a same-origin page.
    const ws = openStream("system/events", {}, (frame) => this.frame(ws, frame), () => {
      if (this.ws !== ws || this.stopped) return;
      this.ws = null;
      this.retry();
    });
    this.ws = ws;
  }

  frame(ws, frame) {
    if (this.ws !== ws) return;
    if (frame.type === "connected") {
      this.backoff.reset();
      setLive();
      this.reload(); // the stream has no replay: catch up with what happened meanwhile
    } else if (frame.type === "workflow_created" && typeof frame.workflow_id === "string") {
      this.fetchNew(frame.workflow_id); // shown before its first event
    } else if (typeof frame.workflow_id === "string" && typeof frame.seq === "number") {
      if (this.loading) this.queued.push(frame);
      else this.apply(frame);
    }
  }

  async retry() {
    // A refused handshake looks like any dropped connection: ask whether the
    // session is still valid before trying again.
    try {
      const state = await loadSession();
      if (state.key_required && !state.signed_in) return signedOut();
    } catch {
      // the server is unreachable: keep trying
    }
    this.reconnectLater();
  }

  async reload() {
    this.loading = true;
    try {
      // order=newest gives the newest page at once; a server without it
      // answers oldest first, and the newest are then at the end.
      const query = `/api/v1/workflows?order=newest&limit=${LIST_LIMIT}`;
      let page = await api(query);
      if (page.total > page.workflows.length && !newestFirst(page)) {
        page = await api(`${query}&offset=${page.total - LIST_LIMIT}`);
      }
      if (this.stopped) return;
      this.rows.clear();
      $("workflows").tBodies[0].replaceChildren();
      const workflows = newestFirst(page) ? [...page.workflows] : [...page.workflows].reverse();
      workflows.sort((a, b) => createdOf(b) - createdOf(a)); // stable: ties keep their order
      for (const workflow of workflows) this.upsert(workflow, { atEnd: true });
      this.total = page.total;
    } catch (error) {
      if (error.status === 401) return signedOut();
      $("list-summary").textContent = `Could not load the workflows: ${error.message}`;
      return;
    } finally {
      this.loading = false;
    }
    const queued = this.queued;
    this.queued = [];
    for (const frame of queued) this.apply(frame);
    this.summarise();
  }

  summarise() {
    const shown = this.rows.size;
    let matching = 0;
    for (const row of this.rows.values()) if (!row.tr.hidden) matching += 1;
    const filtering = Boolean(this.filter.q || this.filter.status);
    $("list-empty").hidden = shown > 0 || filtering;
    $("list-no-match").hidden = !filtering || matching > 0;
    $("workflows").hidden = matching === 0;
    const total = Math.max(this.total ?? 0, shown);
    const plural = (n) => `${n} workflow${n === 1 ? "" : "s"}`;
    let text = total > shown ? `The newest ${shown} of ${total} workflows.` : `${plural(shown)}.`;
    if (filtering) text = `${matching} of ${plural(shown)} ${total > shown ? "shown " : ""}match.`;
    $("list-summary").textContent = text;
  }

  upsert(workflow, { atEnd = false } = {}) {
    let row = this.rows.get(workflow.workflow_id);
    if (!row) {
      const tr = el("tr", { "data-workflow-id": workflow.workflow_id });
      row = { workflow, agents: new Set(), tr };
      this.rows.set(workflow.workflow_id, row);
      const body = $("workflows").tBodies[0];
      if (atEnd) {
        body.append(tr);
      } else {
        // Newest first: before the first row created earlier than this one.
        const created = createdOf(workflow);
        const later = [...body.rows].find(
          (other) => createdOf(this.rows.get(other.dataset.workflowId)?.workflow ?? {}) < created,
        );
        body.insertBefore(tr, later ?? null);
      }
    }
    row.workflow = workflow;
    row.agents = new Set((workflow.agents ?? []).map((agent) => agent.agent_id));
    this.render(row);
  }

  render(row) {
    const { workflow, tr } = row;
    const link = el("a", {
      href: `#/workflows/${encodeURIComponent(workflow.workflow_id)}`,
      text: workflow.workflow_id,
    });
    tr.dataset.status = workflow.status;
    tr.hidden = !this.matches(workflow);
    tr.replaceChildren(
      el("th", { scope: "row" }, link),
      el("td", {}, statusBadge(workflow.status)),
      el("td", { class: "task", title: workflow.task ?? "", text: workflow.task ?? "" }),
      el("td", { class: "num", text: String(row.agents.size) }),
      el("td", { class: "num", text: String(workflow.last_seq) }),
      el("td", { class: "when", title: workflow.created_at ?? "", text: shortDateTimeOf(workflow.created_at) }),
      el("td", { class: "when", title: workflow.updated_at ?? "", text: shortDateTimeOf(workflow.updated_at) }),
    );
  }

  apply(event) {
    const row = this.rows.get(event.workflow_id);
    if (!row) {
      this.fetchNew(event.workflow_id);
      return;
    }
    if (event.seq <= row.workflow.last_seq) return; // already in the snapshot
    const workflow = row.workflow;
    const before = workflow.status;
    workflow.status = nextStatus(workflow.status, event);
    workflow.last_seq = event.seq;
    workflow.updated_at = event.timestamp;
    if (typeof event.agent_id === "string") row.agents.add(event.agent_id);
    this.render(row);
    if (workflow.status !== before && this.filter.status) this.summarise(); // in or out of the filter
  }

  async fetchNew(workflowId) {
    // A workflow created after the list was loaded: announced on the system
    // stream (workflow_created), or, if that was missed, by its first event.
    if (this.fetching.has(workflowId)) return;
    this.fetching.add(workflowId);
    try {
      const workflow = await api(workflowPath(workflowId));
      if (!this.stopped && !this.rows.has(workflowId)) {
        this.upsert(workflow);
        this.total = (this.total ?? 0) + 1;
        this.summarise();
      }
    } catch (error) {
      if (error.status === 401) signedOut();
    } finally {
      this.fetching.delete(workflowId);
    }
  }
}

// --- the timeline of one workflow ---------------------------------------------------------

// The run and each agent as a lane: a bar from the agent's spawn to its last
// output, and one mark per event. Times are seconds after the first event
// shown. A mark's place is `--t / --span` of the lane's width in CSS, so a later
// event that stretches the run rewrites one custom property, not every mark;
// lanes are repainted at most once per animation frame.
class Timeline {
  constructor(onPick) {
    this.onPick = onPick; // called with an agent_id when its lane is clicked
    this.start = null; // the first event's timestamp: {text, seconds}
    this.end = 0; // seconds from the start to the latest event shown
    this.lanes = new Map(); // null for the run itself, else agent_id -> lane
    this.marks = [];
    this.dirty = new Set();
    this.frame = 0;
    $("lanes").replaceChildren();
    $("timeline").hidden = true;
    $("timeline-empty").hidden = false;
    $("timeline-summary").textContent = "";
    this.lane(null);
  }

  stop() {
    cancelAnimationFrame(this.frame);
  }

  /** The lane of an agent (created at the end), or of the run for `null`. */
  lane(agentId, agentType) {
    let lane = this.lanes.get(agentId);
    if (lane) {
      if (agentType && !lane.type.textContent) lane.type.textContent = agentType;
      return lane;
    }
    const bar = el("span", { class: "span-bar" });
    const track = el("span", { class: "track", "aria-hidden": "true" }, bar);
    const duration = el("span", { class: "lane-duration" });
    const type = el("span", { class: "lane-type", text: agentType ?? "" });
    let label;
    if (agentId === null) {
      label = el("span", { class: "lane-label", text: "Run" });
    } else {
      label = el(
        "button",
        {
          type: "button",
          class: "lane-label",
          "data-pick": agentId,
          "aria-pressed": "false",
          title: `Show only the outputs of ${agentId}`,
        },
        el("span", { class: "lane-id", text: agentId }),
        type,
      );
      label.addEventListener("click", () => this.onPick(agentId));
    }
    const li = el("li", { class: agentId === null ? "lane run" : "lane" }, label, track, duration);
    if (agentId !== null) li.dataset.agentId = agentId;
    lane = { agentId, li, bar, track, duration, type, from: null, to: null, spawnTime: null };
    this.lanes.set(agentId, lane);
    $("lanes").append(li);
    this.schedule(lane);
    return lane;
  }

  /** An agent known from the REST snapshot, whose agent_spawned may be gone from the history. */
  agent(agent) {
    const lane = this.lane(agent.agent_id, agent.agent_type);
    if (typeof agent.spawn_time === "number") lane.spawnTime = agent.spawn_time;
  }

  event(event) {
    const at = secondsOf(event.timestamp);
    if (Number.isNaN(at)) return;
    if (this.start === null) {
      this.start = { text: event.timestamp, seconds: at };
      $("timeline").hidden = false;
      $("timeline-empty").hidden = true;
    }
    const t = Math.max(0, at - this.start.seconds);
    this.end = Math.max(this.end, t);
    const agentId = typeof event.agent_id === "string" ? event.agent_id : null;
    let lane = this.lanes.get(null);
    if (event.type === "agent_spawned" || event.type === "agent_output") {
      lane = this.lane(agentId, event.agent_type);
      if (event.type === "agent_spawned") {
        lane.from = t;
        if (typeof event.spawn_time === "number") lane.spawnTime = event.spawn_time;
      } else {
        lane.to = t;
      }
    } else if (this.lanes.has(agentId)) {
      lane = this.lanes.get(agentId); // an error naming its agent, say
    }
    const mark = el("span", {
      class: "mark",
      "data-type": event.type,
      "data-seq": event.seq,
      title: `#${event.seq} ${event.type} at ${durationText(t) || "0 ms"}`,
    });
    mark.style.setProperty("--t", t.toFixed(6)); // CSSOM, allowed by the policy
    lane.track.append(mark);
    this.marks.push(mark);
    if (this.marks.length > MARK_LIMIT) this.marks.shift().remove();
    this.schedule(lane);
    this.schedule(this.lanes.get(null)); // the run grows with every event
  }

  schedule(lane) {
    this.dirty.add(lane);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  render() {
    this.frame = 0;
    $("timeline").style.setProperty("--span", Math.max(this.end, 0.001).toFixed(6));
    $("timeline-end").textContent = durationText(this.end);
    const agents = this.lanes.size - 1;
    $("timeline-summary").textContent =
      `${agents} agent${agents === 1 ? "" : "s"} · ${durationText(this.end) || "0 ms"}`;
    for (const lane of this.dirty) this.paint(lane);
    this.dirty.clear();
  }

  paint(lane) {
    let from = lane.from;
    let to = lane.to;
    if (lane.agentId === null) {
      [from, to] = [0, this.end];
    } else if (from === null && lane.spawnTime !== null) {
      from = Math.max(0, lane.spawnTime); // its agent_spawned is no longer kept
    }
    lane.bar.hidden = from === null;
    lane.bar.style.setProperty("--from", (from ?? 0).toFixed(6));
    lane.bar.style.setProperty("--to", Math.max(to ?? from ?? 0, from ?? 0).toFixed(6));
    let text = "";
    if (from === null) text = "spawn not seen";
    else if (to === null) text = "no output yet";
    else text = durationText(Math.max(0, to - from)) || "0 ms";
    lane.duration.textContent = text;
    const at = (t) => `+${durationText(t) || "0 ms"}`;
    lane.track.title =
      lane.agentId === null
        ? `first event to latest: ${text}`
        : from === null
          ? text
          : `spawned at ${at(from)}${to === null ? ", no output yet" : `, last output at ${at(to)}`}`;
    if (from !== null && to !== null) lane.duration.dataset.seconds = String(Math.max(0, to - from));
    else delete lane.duration.dataset.seconds;
  }

  /** Mark which agent's outputs are shown alone (null: all). */
  picked(agentId) {
    for (const lane of this.lanes.values()) {
      if (lane.agentId !== null) {
        lane.li.firstElementChild.setAttribute("aria-pressed", String(lane.agentId === agentId));
      }
    }
  }
}

// --- one workflow ---------------------------------------------------------------------

class WorkflowView extends LiveView {
  constructor(workflowId) {
    super();
    this.id = workflowId;
    this.lastSeq = 0; // the last event shown: after= on every (re)connection
    this.snapshotSeq = 0; // last_seq of the REST snapshot the page started from
    this.liveFrom = 0; // events beyond this seq arrived live, not from the replay
    this.status = "pending";
    this.agents = new Map(); // agent_id -> {agent, li}
    this.synthesisSeq = -1;
    this.gap = false;
    this.finished = false;
    this.loaded = false;
    this.only = null; // the agent whose outputs are shown alone, or null for all
    this.errorCount = 0; // non-fatal error events shown
    this.timeline = null;
  }

  start() {
    showView("workflow-view", `Workflow ${this.id}`);
    $("workflow-id").textContent = this.id;
    for (const id of ["agents", "outputs", "errors", "metadata"]) $(id).replaceChildren();
    $("log").tBodies[0].replaceChildren();
    $("synthesis").replaceChildren(el("p", { class: "empty", text: "No synthesis yet." }));
    for (const id of ["workflow-notice", "outcome", "errors-banner", "errors-panel", "metadata-card"]) {
      $(id).hidden = true;
    }
    for (const id of ["workflow-created", "workflow-started", "workflow-duration"]) {
      $(id).textContent = "";
    }
    $("errors-toggle").onclick = () => this.toggleErrors();
    $("errors-toggle").textContent = "show";
    $("errors-toggle").setAttribute("aria-expanded", "false");
    $("agents").onclick = (event) => {
      const button = event.target.closest("[data-pick]");
      if (button) this.pick(button.dataset.pick === this.only ? null : button.dataset.pick);
    };
    $("outputs-show-all").onclick = () => this.pick(null);
    this.timeline = new Timeline((agentId) => this.pick(agentId === this.only ? null : agentId));
    this.pick(null);
    this.connect();
  }

  stop() {
    super.stop();
    this.timeline?.stop();
  }

  resumable() {
    return !this.finished;
  }

  failed(error) {
    if (error.status === 401) return signedOut();
    if (error.status === 404) {
      this.stop();
      setConnection("idle", "not found");
      showMessage(
        "Workflow not found",
        `There is no workflow ${this.id}: it never existed, or it finished longer ago than the server keeps workflows.`,
      );
      return;
    }
    this.reconnectLater();
  }

  snapshot(workflow) {
    this.snapshotSeq = workflow.last_seq;
    this.status = workflow.status;
    $("workflow-task").textContent = workflow.task ?? "";
    $("workflow-task").hidden = !workflow.task;
    $("workflow-created").textContent = dateTimeOf(workflow.created_at);
    this.metadata(workflow.metadata);
    for (const agent of workflow.agents ?? []) {
      this.agent(agent);
      this.timeline.agent(agent);
    }
    if (workflow.synthesis) this.synthesis(workflow.synthesis);
    if (workflow.status === "completed") this.outcome("completed", { result: workflow.result });
    else if (workflow.status === "failed" && workflow.error) this.outcome("failed", workflow.error);
    else if (workflow.status === "cancelled") this.outcome("cancelled", {});
    this.facts();
  }

  async connect() {
    if (this.stopped) return;
    setConnection(this.backoff.attempt ? "reconnecting" : "connecting", "connecting");
    let token;
    try {
      if (!this.loaded) {
        // Task, creation time and the state built by events no longer retained.
        const workflow = await api(workflowPath(this.id));
        if (this.stopped) return;
        this.snapshot(workflow);
        this.loaded = true;
      }
      // A fresh token per connection: it only has to be valid at the handshake.
      ({ token } = await api(`${workflowPath(this.id)}/tokens`, { method: "POST" }));
    } catch (error) {
      return this.failed(error);
    }
    if (this.stopped) return;
    const path = `workflows/${encodeURIComponent(this.id)}`;
    const onframe = (frame) => {
      if (this.ws !== ws) return;
      try {
        this.frame(frame);
      } catch (error) {
        console.error("dashboard: could not show a frame", error);
      }
    };
    const ws = openStream(path, { token, after: this.lastSeq }, onframe, (code, reason) => {
      if (this.ws !== ws || this.stopped) return;
      this.ws = null;
      // 1000 is the server's "workflow completed/failed/cancelled": the end.
      // Anything else (1001 restart, 4008 slow consumer, 1006 network) is resumed.
      if (code === 1000 && (TERMINAL.has(this.status) || reason.startsWith("workflow "))) {
        this.finished = true;
        setConnection("finished", `finished: ${reason || this.status}`);
        return;
      }
      this.reconnectLater();
    });
    this.ws = ws;
  }

  frame(frame) {
    if (frame.type === "connected") {
      this.backoff.reset();
      setLive();
      this.liveFrom = frame.last_seq ?? 0;
      if (typeof frame.status === "string") this.status = frame.status;
      this.gap = frame.recovered === false;
      if (this.gap) {
        this.notice("The server no longer keeps some events of this workflow; they are missing here.");
      }
      this.facts();
      return;
    }
    if (typeof frame.seq !== "number") return; // broadcasts, pongs, command errors
    if (frame.seq <= this.lastSeq) return; // shown already: never render an event twice
    if (this.gap && frame.seq > this.lastSeq + 1) {
      this.notice(
        `Events ${this.lastSeq + 1} to ${frame.seq - 1} are no longer kept by the server; they are missing here.`,
      );
    }
    this.gap = false;
    this.lastSeq = frame.seq;
    // Replayed events do not move the status: `connected` said where it is now.
    if (frame.seq > this.liveFrom) this.status = nextStatus(this.status, frame);
    this.event(frame);
    this.facts();
  }

  event(event) {
    const newer = event.seq > this.snapshotSeq; // not already counted in the snapshot
    switch (event.type) {
      case "agent_spawned":
        this.agent({
          agent_id: event.agent_id,
          agent_type: event.agent_type,
          spawn_time: event.spawn_time,
          spawned_at: event.timestamp,
        });
        break;
      case "agent_output": {
        const known = this.agents.get(event.agent_id)?.agent;
        const update = { agent_id: event.agent_id };
        if (newer || !known) {
          update.confidence = event.confidence;
          update.outputs = (known?.outputs ?? 0) + 1;
        }
        this.agent(update);
        this.output(event);
        break;
      }
      case "synthesis":
        this.synthesis(event);
        break;
      case "error":
        // A fatal error is the failure itself; the others are counted apart.
        if (event.fatal === true) this.outcome("failed", event);
        else this.error(event);
        break;
      case "completed":
        this.outcome("completed", event);
        break;
      case "workflow_status":
        if (event.status === "cancelled") this.outcome("cancelled", event);
        break;
      default:
        break;
    }
    this.timeline.event(event);
    this.log(event);
  }

  facts() {
    const status = $("workflow-status");
    status.dataset.status = this.status;
    status.textContent = this.status;
    $("workflow-seq").textContent = this.lastSeq ? `seq ${this.lastSeq}` : "none yet";
    $("workflow-agent-count").textContent = String(this.agents.size);
    $("agents-empty").hidden = this.agents.size > 0;
    const start = this.timeline.start;
    $("workflow-started").textContent = start ? dateTimeOf(start.text) : "not yet";
    const duration = $("workflow-duration");
    const text = start ? durationText(this.timeline.end) || "0 ms" : "";
    duration.textContent = !start ? "—" : TERMINAL.has(this.status) ? text : `${text} so far`;
    duration.dataset.seconds = start ? String(this.timeline.end) : "";
  }

  /** Show only `agentId`'s outputs (null: all of them). */
  pick(agentId) {
    this.only = agentId;
    for (const item of $("outputs").children) {
      item.hidden = agentId !== null && item.dataset.agentId !== agentId;
    }
    for (const button of $("agents").querySelectorAll("[data-pick]")) {
      button.setAttribute("aria-pressed", String(button.dataset.pick === agentId));
    }
    this.timeline.picked(agentId);
    $("outputs-filter").hidden = agentId === null;
    $("outputs-filter-text").textContent = agentId === null ? "" : `Only ${agentId}`;
    this.outputsEmpty();
  }

  outputsEmpty() {
    const list = $("outputs");
    const empty = $("outputs-empty");
    if (this.only === null) {
      empty.hidden = list.children.length > 0;
      empty.textContent = "No output yet.";
    } else {
      empty.hidden = list.querySelector(":scope > li:not([hidden])") !== null;
      empty.textContent = `No output from ${this.only} yet.`;
    }
  }

  error(event) {
    this.errorCount += 1;
    const list = $("errors");
    list.append(
      el(
        "li",
        { class: "output error", "data-seq": event.seq },
        el(
          "div",
          { class: "output-head" },
          el("span", { class: "agent-id", text: typeof event.agent_id === "string" ? event.agent_id : "error" }),
          el("span", { class: "seq", text: `#${event.seq} · ${timeOf(event.timestamp)}` }),
        ),
        el("p", { class: "content", text: String(event.message ?? "") }),
      ),
    );
    while (list.children.length > ROW_LIMIT) list.firstElementChild.remove();
    const n = this.errorCount;
    $("errors-count").textContent = `${n} error${n === 1 ? "" : "s"} (not fatal)`;
    $("errors-banner").hidden = false;
  }

  toggleErrors() {
    const panel = $("errors-panel");
    panel.hidden = !panel.hidden;
    const toggle = $("errors-toggle");
    toggle.setAttribute("aria-expanded", String(!panel.hidden));
    toggle.textContent = panel.hidden ? "show" : "hide";
  }

  /** The workflow's metadata as a key/value list; values that are not text as JSON. */
  metadata(metadata) {
    let entries = [];
    if (metadata !== null && typeof metadata === "object" && !Array.isArray(metadata)) {
      entries = Object.entries(metadata);
    } else if (metadata !== null && metadata !== undefined) {
      entries = [["value", metadata]];
    }
    $("metadata").replaceChildren(
      ...entries.map(([key, value]) =>
        el(
          "div",
          { class: "metadata-entry" },
          el("dt", { text: key }),
          el(
            "dd",
            {},
            typeof value === "string"
              ? value
              : value !== null && typeof value === "object"
                ? el("pre", { text: JSON.stringify(value, null, 2) })
                : el("code", { text: JSON.stringify(value) }),
          ),
        ),
      ),
    );
    $("metadata-card").hidden = entries.length === 0;
  }

  notice(text) {
    const notice = $("workflow-notice");
    notice.textContent = text;
    notice.hidden = false;
  }

  agent(fields) {
    let entry = this.agents.get(fields.agent_id);
    if (!entry) {
      entry = { agent: { agent_id: fields.agent_id, outputs: 0 }, li: el("li", { class: "agent" }) };
      entry.li.dataset.agentId = fields.agent_id;
      this.agents.set(fields.agent_id, entry);
      $("agents").append(entry.li);
    }
    for (const [name, value] of Object.entries(fields)) {
      if (value !== undefined && value !== null) entry.agent[name] = value;
    }
    const agent = entry.agent;
    const spawned =
      typeof agent.spawn_time === "number" ? `spawned at ${agent.spawn_time} s` : "spawn not seen";
    const outputs = `${agent.outputs} output${agent.outputs === 1 ? "" : "s"}`;
    entry.li.replaceChildren(
      el(
        "div",
        { class: "agent-head" },
        el("button", {
          type: "button",
          class: "agent-id agent-pick",
          "data-pick": agent.agent_id,
          "aria-pressed": String(this.only === agent.agent_id),
          title: `Show only the outputs of ${agent.agent_id}`,
          text: agent.agent_id,
        }),
        el("span", { class: "agent-type", text: agent.agent_type ?? "unknown type" }),
      ),
      el("div", { class: "agent-meta", title: agent.spawned_at ?? "", text: `${spawned} · ${outputs}` }),
      typeof agent.confidence === "number"
        ? confidenceBar(agent.confidence)
        : el("span", { class: "muted", text: "no output yet" }),
    );
  }

  output(event) {
    const list = $("outputs");
    const agentId = String(event.agent_id);
    const item = el(
      "li",
      { class: "output", "data-seq": event.seq, "data-agent-id": agentId },
      el(
        "div",
        { class: "output-head" },
        el("span", { class: "agent-id", text: agentId }),
        confidenceBar(event.confidence),
        el("span", { class: "seq", text: `#${event.seq} · ${timeOf(event.timestamp)}` }),
      ),
      el("p", { class: "content", text: String(event.content ?? "") }),
    );
    item.hidden = this.only !== null && agentId !== this.only;
    list.append(item);
    while (list.children.length > ROW_LIMIT) list.firstElementChild.remove();
    if (!item.hidden) $("outputs-empty").hidden = true; // no scan of the list per event
  }

  synthesis(synthesis) {
    const seq = synthesis.seq ?? 0;
    if (seq < this.synthesisSeq) return;
    this.synthesisSeq = seq;
    const details = [];
    if (Array.isArray(synthesis.agents_synthesized)) {
      details.push(`from ${synthesis.agents_synthesized.join(", ")}`);
    } else if (typeof synthesis.agents_synthesized === "number") {
      details.push(`from ${synthesis.agents_synthesized} agents`);
    }
    if (synthesis.final === true) details.push("final");
    details.push(`#${seq} · ${timeOf(synthesis.timestamp)}`);
    $("synthesis").replaceChildren(
      el("p", { class: "content", text: String(synthesis.content ?? "") }),
      el(
        "div",
        { class: "synthesis-meta" },
        typeof synthesis.confidence === "number" ? confidenceBar(synthesis.confidence) : "",
        el("span", { class: "muted", text: details.join(" · ") }),
      ),
    );
  }

  outcome(kind, event) {
    const box = $("outcome");
    box.dataset.kind = kind;
    box.hidden = false;
    const result = $("outcome-result");
    result.hidden = true;
    if (kind === "completed") {
      $("outcome-title").textContent = "Completed";
      $("outcome-text").textContent = "The workflow finished successfully.";
      if (event.result !== undefined && event.result !== null) {
        result.textContent = JSON.stringify(event.result, null, 2);
        result.hidden = false;
      }
    } else if (kind === "failed") {
      $("outcome-title").textContent = "Failed";
      $("outcome-text").textContent = String(event.message ?? "The workflow failed.");
    } else {
      $("outcome-title").textContent = "Cancelled";
      $("outcome-text").textContent = "The workflow was cancelled.";
    }
  }

  log(event) {
    const body = $("log").tBodies[0];
    body.append(
      el(
        "tr",
        { "data-seq": event.seq, "data-type": event.type },
        el("td", { class: "num", text: String(event.seq) }),
        el("td", { title: event.timestamp ?? "", text: timeOf(event.timestamp) }),
        el("td", {}, el("code", { text: String(event.type) })),
        el("td", { class: "fields", text: fieldsOf(event) }),
      ),
    );
    while (body.rows.length > ROW_LIMIT) body.rows[0].remove();
  }
}

// --- routing ----------------------------------------------------------------------------

let current = null;
let generation = 0;

async function route() {
  const mine = ++generation;
  current?.stop();
  current = null;
  try {
    await loadSession();
  } catch {
    if (mine !== generation) return;
    setConnection("offline", "offline");
    showMessage("Felix is not reachable", "The server did not answer. Reload the page to try again.");
    return;
  }
  if (mine !== generation) return;
  if (session.key_required && !session.signed_in) {
    showSignIn();
    return;
  }
  const match = /^#\/workflows\/([^/]+)$/.exec(location.hash);
  let id = null;
  if (match) {
    try {
      id = decodeURIComponent(match[1]);
    } catch {
      id = null;
    }
  }
  current = id === null ? new ListView() : new WorkflowView(id);
  current.start();
}

window.addEventListener("hashchange", route);
// Back online: do not wait for the backoff timer.
window.addEventListener("online", () => current?.wake());
route();
