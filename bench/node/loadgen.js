'use strict';
// The load generator of `nox -s bench` (bench/felix_bench). One process plays one role:
//
//   node loadgen.js '<json config>'
//
//   sub    WebSocket (or Server-Sent Events) subscribers: connect on command, check every event they get
//          (exactly once, in order, by the publisher's own numbering `p`/`n`),
//          record latencies, report when told how many events to expect.
//   pub    REST publisher: per workflow, one or more streams `p`, each with one
//          request in flight and numbering its events n = 1, 2, ... (so each
//          stream's order is its publish order on any server); plus one
//          "canary" subscriber per workflow that is also a checked subscriber
//          and, in `max` mode, bounds how far publishing runs ahead of
//          delivery (a window), so no server builds an unbounded backlog.
//          With `publisher: "both"` each stream publishes first one POST per
//          request for `duration_ms`, then over the producer stream
//          (WS /api/v1/ws/publish, frames pipelined up to `stream_in_flight`)
//          for as long again, numbering on; `published` then carries each
//          phase's events and milliseconds. With `publisher: "stream"` each
//          stream publishes over the producer stream only, for `duration_ms`.
//   storm  WebSocket clients that connect, wait for `connected`, close, repeat.
//
// It talks to the orchestrator in JSON lines: commands on stdin, events on
// stdout ({"event": "..."}); stderr is for humans. It exits when stdin closes
// (the orchestrator is gone) and on a safety deadline, so it never outlives a
// run. All times are milliseconds of CLOCK_MONOTONIC (process.hrtime), the
// clock Python's time.monotonic() reads: comparable across processes here.

const fs = require('fs');
const WebSocket = require('ws');
const { LeanHttpConnection } = require('./lean-http');
const { LeanWebSocket } = require('./lean-ws');
const { LeanEventSource } = require('./lean-sse');

const now = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The lean client unless the run offers permessage-deflate, which only `ws` does;
// an http:// URL is a Server-Sent Events stream (lean-sse.js, the same surface).
function openWebSocket(url, deflate) {
  if (url.startsWith('http://')) return new LeanEventSource(url);
  return deflate ? new WebSocket(url, { perMessageDeflate: true }) : new LeanWebSocket(url);
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function fail(message) {
  emit({ event: 'error', message });
  process.stdout.write('', () => process.exit(1));
}

const config = JSON.parse(process.argv[2] || '{}');
const MAX_ERRORS = 8;

// Every run is bounded: whatever happens, the process ends by this deadline.
const safety = setTimeout(() => fail(`safety deadline of ${config.max_ms} ms reached`), config.max_ms || 120000);
safety.unref();

// ---- commands from the orchestrator -----------------------------------------
const waiters = [];
const pendingCommands = [];
let stdinBuffer = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  stdinBuffer += chunk;
  let newline;
  while ((newline = stdinBuffer.indexOf('\n')) >= 0) {
    const line = stdinBuffer.slice(0, newline).trim();
    stdinBuffer = stdinBuffer.slice(newline + 1);
    if (!line) continue;
    const command = JSON.parse(line);
    if (command.cmd === 'quit') process.exit(0);
    const waiter = waiters.shift();
    if (waiter) waiter(command);
    else pendingCommands.push(command);
  }
});
// The orchestrator closing our stdin means it is gone: leave at once.
process.stdin.on('end', () => process.exit(3));

function nextCommand(expected) {
  return new Promise((resolve) => {
    const take = (command) => {
      if (command.cmd !== expected) fail(`expected command ${expected}, got ${command.cmd}`);
      else resolve(command);
    };
    const queued = pendingCommands.shift();
    if (queued) take(queued);
    else waiters.push(take);
  });
}

// ---- latencies --------------------------------------------------------------
class LatencyLog {
  constructor() {
    this.values = new Float64Array(1 << 15);
    this.length = 0;
  }

  push(value) {
    if (this.length === this.values.length) {
      const grown = new Float64Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.length++] = value;
  }

  // Raw little-endian float64s: the orchestrator reads them with array('d').
  write(path) {
    const view = this.values.subarray(0, this.length);
    fs.writeFileSync(path, Buffer.from(view.buffer, view.byteOffset, view.byteLength));
  }
}

const latencies = new LatencyLog();

// ---- reading the bench's events ----------------------------------------------
// A subscriber reads only `n`, `p`, `t` and `seq` of each event. Finding them
// in the frame's bytes costs a fraction of JSON.parse plus the UTF-8 decoding
// before it, which was the largest cost left in a subscriber process. The
// bench's events are flat objects whose strings hold no quotes, so `"n":`
// can only be the key; anything else (the `connected` frame, an error) has no
// `"n":` and goes to JSON.parse.
const KEY_N = Buffer.from('"n":');
const KEY_P = Buffer.from('"p":');
const KEY_T = Buffer.from('"t":');
const KEY_SEQ = Buffer.from('"seq":');

// The JSON number after `key`, or undefined when the key is absent.
function numberAfter(buf, key) {
  let at = buf.indexOf(key);
  if (at < 0) return undefined;
  at += key.length;
  while (buf[at] === 32) at += 1;
  let end = at;
  for (let c = buf[end]; c !== 44 && c !== 125 && c !== 32 && end < buf.length; c = buf[++end]);
  return Number(buf.latin1Slice(at, end));
}

function benchFields(data) {
  if (typeof data === 'string') return null;
  const n = numberAfter(data, KEY_N);
  if (n === undefined) return null;
  return { n, p: numberAfter(data, KEY_P), t: numberAfter(data, KEY_T), seq: numberAfter(data, KEY_SEQ) };
}

// ---- one checked subscriber -------------------------------------------------
// A workflow gets events from one or more publisher streams (field `p`), each
// numbering its events 1, 2, ... (field `n`) and keeping one request in flight,
// so any correct server delivers each stream's events in `n` order: the
// seed-style server assigns no `seq`, so this is the check both servers get.
// Per subscriber and stream: an `n` seen before is a duplicate; one below the
// highest seen arrived out of order; one never seen by the end is lost. On
// Felix, `seq` must also go up by exactly 1 from `connected`'s `last_seq`: every
// event of these workflows is the bench's, so every subscriber sees them all.
class StreamCheck {
  constructor() {
    this.seen = new Uint8Array(256);
    this.maxSeen = 0;
    this.distinct = 0;
  }
}

const MAX_STREAMS = 64;

class Subscriber {
  constructor(workflowId, url, hooks) {
    this.workflowId = workflowId;
    this.url = url;
    this.hooks = hooks;
    this.streams = [];
    this.distinct = 0;
    this.received = 0;
    this.duplicates = 0;
    this.reordered = 0;
    this.unexpected = 0;
    this.seqErrors = 0;
    this.lastSeq = null;
    this.expected = null; // events per stream, once the publisher is done
    this.expectedTotal = null;
    this.complete = false;
    this.closedEarly = null;
    this.firstRecv = null;
    this.lastRecv = null;
    this.errors = [];
    this.ws = null;
    this.handshakeMs = null;
  }

  note(message) {
    if (this.errors.length < 3) this.errors.push(`${this.workflowId}: ${message}`);
  }

  open(deflate) {
    return new Promise((resolve, reject) => {
      const started = now();
      let connected = false;
      const ws = openWebSocket(this.url, deflate);
      this.ws = ws;
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error('no connected frame within 15 s'));
      }, 15000);
      ws.on('unexpected-response', (_req, res) => {
        clearTimeout(timer);
        reject(new Error(`handshake refused with HTTP ${res.statusCode}`));
        res.resume();
        ws.terminate();
      });
      ws.on('error', (err) => {
        clearTimeout(timer);
        if (!connected) reject(err);
        else this.note(`socket error ${err.message}`);
      });
      ws.on('close', (code, reason) => {
        clearTimeout(timer);
        if (!connected) reject(new Error(`closed ${code} before connected`));
        else if (!this.hooks.closing()) {
          this.closedEarly = code;
          this.note(`closed by the server with ${code} ${reason}`);
          this.hooks.onClosed(this);
        }
      });
      ws.on('message', (data) => {
        const at = now();
        let event = connected ? benchFields(data) : null;
        if (event !== null) {
          this.onEvent(event, at);
          return;
        }
        try {
          event = JSON.parse(data);
        } catch {
          return; // a plain-text frame such as `pong`: not an event
        }
        if (typeof event.n === 'number') {
          this.onEvent(event, at);
        } else if (event.type === 'connected' && !connected) {
          connected = true;
          clearTimeout(timer);
          this.handshakeMs = at - started;
          if (typeof event.last_seq === 'number') this.lastSeq = event.last_seq;
          resolve(this);
        }
      });
    });
  }

  onEvent(event, at) {
    const n = event.n;
    const p = event.p === undefined ? 0 : event.p;
    this.received += 1;
    if (this.firstRecv === null) this.firstRecv = at;
    this.lastRecv = at;
    latencies.push(at - event.t);
    if (typeof event.seq === 'number') {
      if (this.lastSeq !== null && event.seq !== this.lastSeq + 1) {
        this.seqErrors += 1;
        this.note(`seq ${event.seq} after seq ${this.lastSeq}`);
      }
      this.lastSeq = event.seq;
    }
    const limit = this.expected === null ? Infinity : this.expected[p] || 0;
    if (!Number.isInteger(n) || n < 1 || n > limit || !Number.isInteger(p) || p < 0 || p >= MAX_STREAMS) {
      this.unexpected += 1;
      this.note(`unexpected event p=${p} n=${n}`);
      return;
    }
    const stream = this.streams[p] || (this.streams[p] = new StreamCheck());
    while (n >= stream.seen.length) {
      const grown = new Uint8Array(stream.seen.length * 2);
      grown.set(stream.seen);
      stream.seen = grown;
    }
    if (stream.seen[n]) {
      this.duplicates += 1;
      this.note(`duplicate p=${p} n=${n}`);
    } else {
      stream.seen[n] = 1;
      stream.distinct += 1;
      this.distinct += 1;
      if (n < stream.maxSeen) {
        this.reordered += 1;
        this.note(`p=${p} n=${n} arrived after n=${stream.maxSeen}`);
      }
    }
    if (n > stream.maxSeen) stream.maxSeen = n;
    this.hooks.onProgress(this);
  }

  expect(perStream) {
    this.expected = perStream;
    this.expectedTotal = perStream.reduce((a, b) => a + b, 0);
    this.checkComplete();
  }

  checkComplete() {
    if (!this.complete && this.expectedTotal !== null && this.distinct >= this.expectedTotal) {
      this.complete = true;
      this.hooks.onComplete(this);
    }
  }

  lost() {
    if (this.expected === null) return 0;
    let lost = 0;
    this.expected.forEach((count, p) => {
      lost += Math.max(0, count - (this.streams[p] ? this.streams[p].distinct : 0));
    });
    return lost;
  }
}

// A set of subscribers, their connection and their final check.
class Audience {
  constructor(base, deflate) {
    this.base = base;
    this.deflate = deflate;
    this.subscribers = [];
    this.remaining = 0;
    this.closing = false;
    this.onAllComplete = null;
    this.progressListeners = [];
    this.connectErrors = [];
    this.connectFailures = 0;
  }

  add(workflowId) {
    const sub = new Subscriber(workflowId, this.base + encodeURIComponent(workflowId), {
      closing: () => this.closing,
      onProgress: (s) => {
        for (const listener of this.progressListeners) listener(s);
        if (s.expectedTotal !== null) s.checkComplete();
      },
      onComplete: () => {
        this.remaining -= 1;
        this.checkSettled();
      },
      // A subscriber the server closed will get nothing more: stop waiting for it.
      onClosed: () => this.checkSettled(),
    });
    this.subscribers.push(sub);
    return sub;
  }

  // Open every subscriber with at most `concurrency` handshakes in flight.
  async connect(concurrency) {
    const queue = this.subscribers.slice();
    const started = now();
    let lastDone = started;
    const worker = async () => {
      for (let sub = queue.shift(); sub; sub = queue.shift()) {
        try {
          await sub.open(this.deflate);
          lastDone = now();
        } catch (err) {
          this.connectFailures += 1;
          if (this.connectErrors.length < MAX_ERRORS) this.connectErrors.push(String(err.message || err));
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
    const times = this.subscribers.filter((s) => s.handshakeMs !== null).map((s) => s.handshakeMs);
    return {
      connected: times.length,
      failed: this.connectFailures,
      errors: this.connectErrors,
      first_start: started,
      last_done: lastDone,
      handshake_ms: summarize(times),
    };
  }

  checkSettled() {
    if (this.onAllComplete && this.subscribers.every((s) => s.complete || s.closedEarly !== null)) {
      this.onAllComplete();
    }
  }

  // Wait until every subscriber has `counts[workflow]` events (or drain_ms passes).
  async awaitCounts(counts, drainMs) {
    this.remaining = this.subscribers.length;
    let drainTimer = null;
    const settled = new Promise((resolve) => {
      this.onAllComplete = resolve;
      drainTimer = setTimeout(resolve, drainMs);
    });
    for (const sub of this.subscribers) sub.expect(counts[sub.workflowId] || []);
    this.checkSettled();
    await settled;
    clearTimeout(drainTimer);
    // A short grace period catches duplicates that would arrive after the last event.
    await sleep(100);
  }

  report() {
    const total = { subscribers: this.subscribers.length, received: 0, delivered: 0, duplicates: 0,
      reordered: 0, lost: 0, unexpected: 0, seq_errors: 0, closed_early: 0,
      first_recv: null, last_recv: null, errors: [] };
    for (const s of this.subscribers) {
      total.received += s.received;
      total.delivered += s.distinct;
      total.duplicates += s.duplicates;
      total.reordered += s.reordered;
      total.lost += s.lost();
      total.unexpected += s.unexpected;
      total.seq_errors += s.seqErrors;
      if (s.closedEarly !== null) total.closed_early += 1;
      if (s.firstRecv !== null && (total.first_recv === null || s.firstRecv < total.first_recv)) total.first_recv = s.firstRecv;
      if (s.lastRecv !== null && (total.last_recv === null || s.lastRecv > total.last_recv)) total.last_recv = s.lastRecv;
      if (s.lost() > 0) s.note(`lost ${s.lost()} of ${s.expectedTotal} events`);
      for (const e of s.errors) if (total.errors.length < MAX_ERRORS) total.errors.push(e);
    }
    return total;
  }

  close() {
    this.closing = true;
    for (const s of this.subscribers) if (s.ws) s.ws.terminate();
  }
}

function summarize(values) {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { count: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] };
}

// Report, then stay (sockets open, idle) until the orchestrator has read this
// process's CPU time and says quit; stdin closing or the safety deadline end it too.
function finish(obj) {
  if (config.latency_file) latencies.write(config.latency_file);
  emit({ ...obj, cpu_ms: cpuMs() });
}

function cpuMs() {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}

// ---- pacing: the publisher never runs ahead of the slowest subscriber ----------
// Subscribers in other processes share one CPU with the publisher and may fall
// behind its canary; if the publisher only watched the canary, a server could
// build a backlog for them without bound (Felix would then close them with
// 4008, as its slow-consumer policy says). So every sub process publishes, per
// workflow of its assignment in order, the events its slowest open subscriber
// has (a Float64 each, rewritten in place every PROGRESS_MS), and the
// publisher's window counts from the lowest of those and its canary.
const PROGRESS_MS = 2;

function reportProgress(audience, file) {
  const order = config.workflows.map(([workflowId]) => workflowId);
  const slot = new Map(order.map((workflowId, index) => [workflowId, index]));
  const values = new Float64Array(order.length);
  const bytes = Buffer.from(values.buffer);
  const fd = fs.openSync(file, 'w');
  const write = () => {
    values.fill(Infinity);
    for (const sub of audience.subscribers) {
      // A subscriber the server closed gets nothing more: it must not hold the rest.
      if (sub.closedEarly !== null) continue;
      const index = slot.get(sub.workflowId);
      if (sub.distinct < values[index]) values[index] = sub.distinct;
    }
    fs.writeSync(fd, bytes, 0, bytes.length, 0);
  };
  write();
  setInterval(write, PROGRESS_MS).unref();
}

class SlowestSubscribers {
  constructor(entries) {
    // entries: [{file, workflows: [ids in the file's order]}]
    this.readers = (entries || []).map(({ file, workflows }) => ({
      fd: fs.openSync(file, 'r'),
      slot: new Map(workflows.map((workflowId, index) => [workflowId, index])),
      values: new Float64Array(workflows.length),
    }));
  }

  // The events the slowest subscriber of `workflowId` in any sub process has.
  of(workflowId) {
    let lowest = Infinity;
    for (const reader of this.readers) {
      const index = reader.slot.get(workflowId);
      if (index === undefined) continue;
      fs.readSync(reader.fd, Buffer.from(reader.values.buffer), 0, reader.values.byteLength, 0);
      lowest = Math.min(lowest, reader.values[index]);
    }
    return lowest;
  }
}

// ---- roles ------------------------------------------------------------------
async function runSub() {
  const audience = new Audience(config.ws_base, config.deflate);
  // Warm-up connections (idle scenario): the server's first handshakes import
  // and allocate things once; they must not count as per-connection memory.
  if (config.warmup > 0) {
    const warm = new Audience(config.ws_base, config.deflate);
    for (let i = 0; i < config.warmup; i++) warm.add(config.workflows[0][0]);
    await warm.connect(Math.min(config.warmup, config.connect_concurrency));
    warm.close();
    await sleep(300);
  }
  for (const [workflowId, count] of config.workflows) {
    for (let i = 0; i < count; i++) audience.add(workflowId);
  }
  emit({ event: 'started' });
  await nextCommand('connect');
  const connect = await audience.connect(config.connect_concurrency);
  if (config.progress_file) reportProgress(audience, config.progress_file);
  emit({ event: 'ready', ...connect });
  const expect = await nextCommand('expect');
  await audience.awaitCounts(expect.counts, expect.drain_ms);
  const report = audience.report();
  finish({ event: 'done', ...report, latency_count: latencies.length });
}

async function runPub() {
  const streams = Math.max(1, config.streams || 1);
  const pad = 'x'.repeat(config.pad || 0);
  const postTimes = [];
  const errors = [];
  // Keep-alive connections, one per request in flight (so one per stream once
  // warm): a stream's requests never queue behind another stream's.
  const idle = [];
  const connections = [];
  // The producer stream (publisher "both"), its frames awaiting an answer, and
  // each phase's events and duration.
  let producer = null;
  const unanswered = [];
  const phases = {};

  async function post(path, body) {
    let connection = idle.pop();
    if (!connection) {
      connection = new LeanHttpConnection(config.host, config.port);
      connections.push(connection);
    }
    const answer = await connection.request('POST', path, body);
    idle.push(connection);
    return answer;
  }

  // The canaries: one checked subscriber per workflow, in this process, so the
  // window below needs no round trip through the orchestrator.
  const canaries = new Audience(config.ws_base, config.deflate);
  const byWorkflow = new Map();
  for (const workflowId of config.workflows) byWorkflow.set(workflowId, canaries.add(workflowId));
  const windowWaiters = new Map(); // workflow -> [{threshold, resolve}]
  canaries.progressListeners.push((sub) => {
    const waiting = windowWaiters.get(sub.workflowId);
    if (!waiting) return;
    const still = waiting.filter((waiter) => {
      if (sub.distinct < waiter.threshold) return true;
      waiter.resolve();
      return false;
    });
    windowWaiters.set(sub.workflowId, still);
  });
  const connect = await canaries.connect(8);
  if (connect.failed > 0) {
    fail(`canary subscribers could not connect: ${connect.errors.join('; ')}`);
    return;
  }
  // Warm each keep-alive connection (and the server's request path) once.
  await Promise.all(
    Array.from({ length: config.workflows.length * streams }, () =>
      post('/api/v1/workflows', '{"task": "bench warm-up"}')),
  );
  if (config.publisher === 'both' || config.publisher === 'stream') producer = await openProducer();
  emit({ event: 'ready', canaries: connect });
  await nextCommand('go');
  // Opened after 'go': every sub process wrote its file before it said 'ready'.
  const slowest = new SlowestSubscribers(config.progress);

  const published = {}; // workflow -> events acknowledged, per stream
  const sent = new Map(); // workflow -> events sent (acknowledged or in flight)
  let requests = 0;
  let late = 0;
  let maxLag = 0;
  const start = now();
  const stopAt = start + (config.duration_ms || 0);

  // `max` mode: a stream may send only while every subscriber (the canary and
  // the slowest of each sub process) has all but `window` of the workflow's
  // sent events, so no server builds an unbounded backlog.
  function canaryAtLeast(workflowId, threshold) {
    const canary = byWorkflow.get(workflowId);
    if (canary.distinct >= threshold || canary.closedEarly !== null) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`canary stalled below ${threshold} events for 10 s`)), 10000);
      windowWaiters.get(workflowId).push({ threshold, resolve: () => { clearTimeout(timer); resolve(); } });
    });
  }

  async function waitForWindow(workflowId, threshold) {
    await canaryAtLeast(workflowId, threshold);
    const deadline = now() + 10000;
    while (slowest.of(workflowId) < threshold) {
      if (now() > deadline) throw new Error(`subscribers stalled below ${threshold} events for 10 s`);
      await sleep(PROGRESS_MS / 2);
    }
  }

  // The producer stream: one WebSocket per process; frames are answered in
  // the order sent, so each answer settles the oldest frame in flight.
  const STREAM_IN_FLIGHT = config.stream_in_flight || 512;

  function openProducer() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://${config.host}:${config.port}/api/v1/ws/publish`);
      ws.on('error', reject);
      ws.on('close', () => {
        for (const frame of unanswered.splice(0)) frame.reject(new Error('producer stream closed'));
      });
      ws.on('message', (data) => {
        const answer = JSON.parse(data.toString());
        if (answer.type === 'connected') return resolve(ws);
        const frame = unanswered.shift();
        if (answer.type === 'ack' && answer.ref === frame.n) frame.resolve(answer);
        else frame.reject(new Error(`producer stream answered ${JSON.stringify(answer).slice(0, 200)}`));
      });
    });
  }

  function sendFrame(workflowId, events, n) {
    return new Promise((resolve, reject) => {
      unanswered.push({ n, resolve, reject });
      const frame = events.length === 1
        ? { ref: n, workflow_id: workflowId, event: events[0] }
        : { ref: n, workflow_id: workflowId, events };
      producer.send(JSON.stringify(frame));
    });
  }

  async function streamPhase(workflowId, p, n, until) {
    const batch = config.batch || 1;
    const inFlight = [];
    while (now() < until) {
      if (config.window > 0) await waitForWindow(workflowId, sent.get(workflowId) + batch - config.window);
      if (inFlight.length >= STREAM_IN_FLIGHT) await inFlight.shift();
      const events = [];
      const t = now();
      for (let i = 0; i < batch; i++) {
        n += 1;
        events.push({ type: 'agent_output', agent_id: 'bench', content: pad, confidence: 0.5, p, n, t });
      }
      sent.set(workflowId, sent.get(workflowId) + batch);
      const last = n;
      inFlight.push(sendFrame(workflowId, events, last).then(() => {
        published[workflowId][p] = last;
        requests += 1;
      }));
    }
    await Promise.all(inFlight);
    return n;
  }

  async function stream(workflowId, p, index, total) {
    const path = `/api/v1/workflows/${encodeURIComponent(workflowId)}/events`;
    const batch = config.batch || 1;
    let n = 0;
    let phaseStart = start;
    // Rate mode: each stream gets rate/total of the events, its schedule
    // offset so that the streams' sends interleave evenly.
    const period = config.mode === 'rate' ? (1000 * batch * total) / (config.rate * config.workflows.length) : 0;
    let due = start + (period * index) / total;
    if (config.publisher === 'stream') {
      // The producer stream only: no POST phase, the frames from the start.
      await streamPhase(workflowId, p, 0, stopAt);
      return;
    }
    for (;;) {
      if (config.mode === 'count' && n >= config.count) break;
      if (config.mode !== 'count' && now() >= stopAt) break;
      if (config.mode === 'rate') {
        const wait = due - now();
        if (wait > 1) await sleep(wait);
        else if (wait < -1) {
          late += 1;
          maxLag = Math.max(maxLag, -wait);
        }
        due += period;
      } else if (config.mode === 'max' && config.window > 0) {
        await waitForWindow(workflowId, sent.get(workflowId) + batch - config.window);
      }
      const events = [];
      const t = now();
      for (let i = 0; i < batch; i++) {
        n += 1;
        events.push({ type: 'agent_output', agent_id: 'bench', content: pad, confidence: 0.5, p, n, t });
      }
      sent.set(workflowId, sent.get(workflowId) + batch);
      const body = JSON.stringify(batch === 1 ? events[0] : events);
      const answer = await post(path, body);
      postTimes.push(now() - t);
      requests += 1;
      if (answer.status !== 202) {
        // The events of a refused request were not published: stop this
        // stream here so that what it published stays 1..n without a gap.
        throw new Error(`POST ${path} answered ${answer.status}: ${answer.body.slice(0, 200)}`);
      }
      published[workflowId][p] = n;
    }
    if (config.publisher === 'both') {
      const posted = n;
      const streamStart = now();
      // Streams run side by side: a phase's events add up, its time is the longest.
      const add = (name, events, ms) => {
        const phase = phases[name] || (phases[name] = { events: 0, ms: 0 });
        phase.events += events;
        phase.ms = Math.max(phase.ms, ms);
      };
      add('post', posted, streamStart - phaseStart);
      n = await streamPhase(workflowId, p, n, streamStart + (config.duration_ms || 0));
      add('stream', n - posted, now() - streamStart);
    }
  }

  const runs = [];
  config.workflows.forEach((workflowId, w) => {
    published[workflowId] = new Array(streams).fill(0);
    sent.set(workflowId, 0);
    windowWaiters.set(workflowId, []);
    for (let p = 0; p < streams; p++) {
      runs.push(stream(workflowId, p, w * streams + p, config.workflows.length * streams));
    }
  });
  const results = await Promise.allSettled(runs);
  const end = now();
  for (const result of results) {
    if (result.status === 'rejected' && errors.length < MAX_ERRORS) {
      errors.push(String(result.reason.message || result.reason));
    }
  }
  if (producer) producer.close();
  emit({ event: 'published', published, start, end, requests, late, max_lag_ms: maxLag,
    errors, post_ms: summarize(postTimes), phases });
  const expect = await nextCommand('expect');
  await canaries.awaitCounts(published, expect.drain_ms);
  const report = canaries.report();
  for (const connection of connections) connection.close();
  finish({ event: 'done', ...report, latency_count: latencies.length });
}

async function runStorm() {
  let handshakes = 0;
  let failures = 0;
  const errors = [];
  const times = [];

  function cycle() {
    return new Promise((resolve, reject) => {
      const started = now();
      let connectedAt = null;
      const ws = openWebSocket(config.url, config.deflate);
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error('cycle took over 15 s'));
      }, 15000);
      ws.on('unexpected-response', (_req, res) => {
        clearTimeout(timer);
        res.resume();
        ws.terminate();
        reject(new Error(`handshake refused with HTTP ${res.statusCode}`));
      });
      ws.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      ws.on('message', (data) => {
        if (connectedAt !== null) return;
        let event;
        try {
          event = JSON.parse(data);
        } catch {
          return;
        }
        if (event.type === 'connected') {
          connectedAt = now();
          times.push(connectedAt - started);
          ws.close(1000);
        }
      });
      ws.on('close', () => {
        clearTimeout(timer);
        if (connectedAt === null) reject(new Error('closed before connected'));
        else resolve();
      });
    });
  }

  emit({ event: 'ready' });
  await nextCommand('go');
  const start = now();
  const stopAt = start + config.duration_ms;
  const client = async () => {
    while (now() < stopAt) {
      try {
        await cycle();
        handshakes += 1;
      } catch (err) {
        failures += 1;
        if (errors.length < MAX_ERRORS) errors.push(String(err.message || err));
        await sleep(20); // a refused or broken cycle must not become a busy loop
      }
    }
  };
  await Promise.all(Array.from({ length: config.clients }, client));
  const end = now();
  finish({ event: 'done', handshakes, failures, errors, start, end, handshake_ms: summarize(times) });
}

const roles = { sub: runSub, pub: runPub, storm: runStorm };
if (!roles[config.role]) {
  fail(`unknown role ${config.role}`);
} else {
  roles[config.role]().catch((err) => fail(String((err && err.stack) || err)));
}
