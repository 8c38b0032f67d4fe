'use strict';
// Drives the bench's own lean clients (bench/node/lean-ws.js, lean-http.js)
// against a real server and prints one JSON line per thing that happened, for
// tests/web/test_bench_clients.py to check. Arguments: the server's http base,
// a workflow id, and an id that does not exist.
const path = require('path');
const { LeanHttpConnection } = require(path.join(__dirname, '..', '..', 'bench', 'node', 'lean-http'));
const { LeanWebSocket } = require(path.join(__dirname, '..', '..', 'bench', 'node', 'lean-ws'));

const [base, workflowId, missingId] = process.argv.slice(2);
const target = new URL(base);
const wsBase = `ws://${target.host}/api/v1/ws/workflows/`;
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
setTimeout(() => { say({ error: 'gave up after 15 s' }); process.exit(2); }, 15000).unref();

function refused() {
  return new Promise((resolve) => {
    const ws = new LeanWebSocket(wsBase + missingId);
    ws.on('unexpected-response', (_req, res) => { say({ refused: res.statusCode }); ws.terminate(); resolve(); });
    ws.on('message', () => { say({ error: 'a refused handshake delivered a message' }); resolve(); });
  });
}

async function publishAll() {
  const http = new LeanHttpConnection(target.hostname, Number(target.port));
  const post = async (body) => {
    const answer = await http.request('POST', `/api/v1/workflows/${workflowId}/events`, JSON.stringify(body));
    say({ status: answer.status, body: JSON.parse(answer.body) });
  };
  // Frames with a 16-bit and a 64-bit length field (the pong has a 7-bit one).
  await post({ type: 'agent_output', agent_id: 'a', content: 'small', confidence: 0.5 });
  await post({ type: 'agent_output', agent_id: 'a', content: 'm'.repeat(1000), confidence: 0.5 });
  await post({ type: 'agent_output', agent_id: 'a', content: 'l'.repeat(100000), confidence: 0.5 });
  // A batch: several frames arrive in one read.
  await post([1, 2, 3].map((i) => ({ type: 'synthesis', content: `part ${i}` })));
  await post({ type: 'workflow_status', status: 'cancelled' });
  http.close();
}

async function main() {
  await refused();
  const ws = new LeanWebSocket(wsBase + workflowId);
  ws.on('message', (data, binary) => {
    const text = data.toString('utf8');
    if (text === 'pong') {
      say({ text });
      publishAll().catch((err) => say({ error: String(err) }));
      return;
    }
    const event = JSON.parse(text);
    say({ type: event.type, seq: event.seq, bytes: data.length, binary });
    // A client frame (masked): the contract answers a plain-text ping.
    if (event.type === 'connected') ws.sendFrame(0x1, Buffer.from('ping'));
  });
  ws.on('close', (code, reason) => { say({ close: code, reason }); process.exit(0); });
  ws.on('error', (err) => say({ error: String(err) }));
}

main();
