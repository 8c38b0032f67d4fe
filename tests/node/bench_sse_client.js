'use strict';
// Drives the bench's lean Server-Sent Events client (bench/node/lean-sse.js)
// against a real server and prints one JSON line per thing that happened, for
// tests/web/test_bench_clients.py to check. Arguments: the server's http base,
// a workflow id, and an id that does not exist.
const path = require('path');
const { LeanHttpConnection } = require(path.join(__dirname, '..', '..', 'bench', 'node', 'lean-http'));
const { LeanEventSource } = require(path.join(__dirname, '..', '..', 'bench', 'node', 'lean-sse'));

const [base, workflowId, missingId] = process.argv.slice(2);
const target = new URL(base);
const sseBase = `http://${target.host}/api/v1/sse/workflows/`;
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
setTimeout(() => { say({ error: 'gave up after 15 s' }); process.exit(2); }, 15000).unref();

function refused() {
  return new Promise((resolve) => {
    const source = new LeanEventSource(sseBase + missingId);
    source.on('unexpected-response', (_req, res) => { say({ refused: res.statusCode }); resolve(); });
    source.on('message', () => { say({ error: 'a refused stream delivered a message' }); resolve(); });
  });
}

async function publishAll() {
  const http = new LeanHttpConnection(target.hostname, Number(target.port));
  const post = async (body) => {
    const answer = await http.request('POST', `/api/v1/workflows/${workflowId}/events`, JSON.stringify(body));
    say({ status: answer.status });
  };
  // "data: " inside a string is not a line of its own.
  await post({ type: 'agent_output', agent_id: 'a', content: 'x data: y', confidence: 0.5 });
  // Larger than one read: the message spans several chunks of the socket.
  await post({ type: 'agent_output', agent_id: 'a', content: 'l'.repeat(200000), confidence: 0.5 });
  // A batch: several messages in one chunk.
  await post([1, 2, 3].map((i) => ({ type: 'synthesis', content: `part ${i}` })));
  await post({ type: 'workflow_status', status: 'cancelled' });
  http.close();
}

async function main() {
  await refused();
  const source = new LeanEventSource(sseBase + workflowId);
  source.on('message', (data) => {
    const event = JSON.parse(data.toString('utf8'));
    say({ type: event.type, seq: event.seq, bytes: data.length, content: (event.content || '').slice(0, 12) });
    if (event.type === 'connected') publishAll().catch((err) => say({ error: String(err) }));
  });
  source.on('close', (code, reason) => { say({ close: code, reason }); process.exit(0); });
  source.on('error', (err) => say({ error: String(err) }));
}

main();
