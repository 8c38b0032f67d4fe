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

function timeOf(timestamp) {
  return typeof timestamp === "string" ? timestamp.slice(11, 19) : "";
}

function dateTimeOf(timestamp) {
  return typeof timestamp === "string" ? timestamp.slice(0, 19).replace("T", " ") + " UTC" : "";
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

// What both views share: one WebSocket at a time, opened again with backoff
// after a drop, until the view is left (stop) or has nothing more to follow.
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

class ListView extends LiveView {
  constructor() {
    super();
    this.rows = new Map(); // workflow_id -> {workflow, agents: Set, tr}
    this.loading = false;
    this.queued = [];
    this.fetching = new Set();
  }

  start() {
    showView("list-view", "Workflows");
    $("workflows").tBodies[0].replaceChildren();
    $("list-summary").textContent = "Loading…";
    $("list-empty").hidden = true;
    $("refresh").onclick = () => this.reload();
    this.connect();
  }

  connect() {
    if (this.stopped) return;
    setConnection(this.backoff.attempt ? "reconnecting" : "connecting", "connecting");
    // The system stream carries every workflow's events: the list follows them
    // instead of polling. The session cookie opens it for a same-origin page.
    const ws = new WebSocket(wsUrl("/api/v1/ws/system/events"));
    this.ws = ws;
    ws.onmessage = (message) => {
      if (this.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (frame.type === "connected") {
        this.backoff.reset();
        setConnection("live", "live");
        this.reload(); // the stream has no replay: catch up with what happened meanwhile
      } else if (frame.type === "workflow_created" && typeof frame.workflow_id === "string") {
        this.fetchNew(frame.workflow_id); // shown before its first event
      } else if (typeof frame.workflow_id === "string" && typeof frame.seq === "number") {
        if (this.loading) this.queued.push(frame);
        else this.apply(frame);
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws || this.stopped) return;
      this.ws = null;
      this.retry();
    };
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
      let page = await api(`/api/v1/workflows?limit=${LIST_LIMIT}`);
      if (page.total > LIST_LIMIT) {
        page = await api(`/api/v1/workflows?limit=${LIST_LIMIT}&offset=${page.total - LIST_LIMIT}`);
      }
      if (this.stopped) return;
      this.rows.clear();
      $("workflows").tBodies[0].replaceChildren();
      const newestFirst = [...page.workflows].reverse();
      for (const workflow of newestFirst) this.upsert(workflow, { atEnd: true });
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
    $("list-empty").hidden = shown > 0;
    $("workflows").hidden = shown === 0;
    const total = Math.max(this.total ?? 0, shown);
    $("list-summary").textContent =
      total > shown ? `The newest ${shown} of ${total} workflows.` : `${shown} workflow${shown === 1 ? "" : "s"}.`;
  }

  upsert(workflow, { atEnd = false } = {}) {
    let row = this.rows.get(workflow.workflow_id);
    if (!row) {
      const tr = el("tr", { "data-workflow-id": workflow.workflow_id });
      row = { workflow, agents: new Set(), tr };
      this.rows.set(workflow.workflow_id, row);
      const body = $("workflows").tBodies[0];
      if (atEnd) body.append(tr);
      else body.prepend(tr);
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
    tr.replaceChildren(
      el("th", { scope: "row" }, link),
      el("td", {}, statusBadge(workflow.status)),
      el("td", { class: "task", text: workflow.task ?? "" }),
      el("td", { class: "num", text: String(row.agents.size) }),
      el("td", { class: "num", text: String(workflow.last_seq) }),
      el("td", { title: workflow.updated_at ?? "", text: dateTimeOf(workflow.updated_at) }),
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
    workflow.status = nextStatus(workflow.status, event);
    workflow.last_seq = event.seq;
    workflow.updated_at = event.timestamp;
    if (typeof event.agent_id === "string") row.agents.add(event.agent_id);
    this.render(row);
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
  }

  start() {
    showView("workflow-view", `Workflow ${this.id}`);
    $("workflow-id").textContent = this.id;
    for (const id of ["agents", "outputs"]) $(id).replaceChildren();
    $("log").tBodies[0].replaceChildren();
    $("synthesis").replaceChildren(el("p", { class: "empty", text: "No synthesis yet." }));
    $("workflow-notice").hidden = true;
    $("outcome").hidden = true;
    this.connect();
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
    for (const agent of workflow.agents ?? []) this.agent(agent);
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
    const ws = new WebSocket(
      wsUrl(`/api/v1/ws/workflows/${encodeURIComponent(this.id)}`, { token, after: this.lastSeq }),
    );
    this.ws = ws;
    ws.onmessage = (message) => {
      if (this.ws !== ws) return;
      try {
        this.frame(JSON.parse(message.data));
      } catch (error) {
        console.error("dashboard: could not show a frame", error);
      }
    };
    ws.onclose = (event) => {
      if (this.ws !== ws || this.stopped) return;
      this.ws = null;
      // 1000 is the server's "workflow completed/failed/cancelled": the end.
      // Anything else (1001 restart, 4008 slow consumer, 1006 network) is resumed.
      if (event.code === 1000 && (TERMINAL.has(this.status) || event.reason.startsWith("workflow "))) {
        this.finished = true;
        setConnection("finished", `finished: ${event.reason || this.status}`);
        return;
      }
      this.reconnectLater();
    };
  }

  frame(frame) {
    if (frame.type === "connected") {
      this.backoff.reset();
      setConnection("live", "live");
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
        this.output(event);
        if (event.fatal === true) this.outcome("failed", event);
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
    this.log(event);
  }

  facts() {
    const status = $("workflow-status");
    status.dataset.status = this.status;
    status.textContent = this.status;
    $("workflow-seq").textContent = this.lastSeq ? `seq ${this.lastSeq}` : "none yet";
    $("workflow-agent-count").textContent = String(this.agents.size);
    $("agents-empty").hidden = this.agents.size > 0;
    $("outputs-empty").hidden = $("outputs").children.length > 0;
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
        el("span", { class: "agent-id", text: agent.agent_id }),
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
    const item =
      event.type === "error"
        ? el(
            "li",
            { class: "output error", "data-seq": event.seq },
            el(
              "div",
              { class: "output-head" },
              el("span", { class: "agent-id", text: event.fatal === true ? "fatal error" : "error" }),
              el("span", { class: "seq", text: `#${event.seq} · ${timeOf(event.timestamp)}` }),
            ),
            el("p", { class: "content", text: String(event.message ?? "") }),
          )
        : el(
            "li",
            { class: "output", "data-seq": event.seq },
            el(
              "div",
              { class: "output-head" },
              el("span", { class: "agent-id", text: String(event.agent_id) }),
              confidenceBar(event.confidence),
              el("span", { class: "seq", text: `#${event.seq} · ${timeOf(event.timestamp)}` }),
            ),
            el("p", { class: "content", text: String(event.content ?? "") }),
          );
    list.append(item);
    while (list.children.length > ROW_LIMIT) list.firstElementChild.remove();
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
