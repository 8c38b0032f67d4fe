'use strict';
// A Felix client written the way a browser page would be: `new WebSocket(url)`,
// `onmessage` switching on `data.type`, `onclose`. Under Node the `ws` package
// stands in for the browser's WebSocket; tests/web/test_node_client.py runs it.
//
//   node watch.js ws://127.0.0.1:8000/api/v1/ws/workflows/wf_3f9a1c2b7d4e?after=0
//
// Output, one JSON line per thing seen, on stdout:
//   - every message received, parsed (a text frame that is not JSON, such as
//     the answer `pong` to the plain-text `ping`, as {"text": "..."});
//   - {"error": "..."} if the socket reports an error;
//   - {"handshake_refused": true, "status", "content_type", "body"} if the
//     server refuses the handshake (only `ws` can see this: a browser hides
//     the HTTP answer), then exit 1;
//   - {"closed": true, "code", "reason"} when the socket closes, then exit 0.
// Right after `connected` it sends the plain-text `ping` and {"type": "ping"}.
// A safety timer exits 2 if nothing ends the run within SAFETY_TIMEOUT_MS.

const WebSocket = require('ws');

const SAFETY_TIMEOUT_MS = 20000;

const url = process.argv[2];
if (!url) {
  process.stderr.write('usage: node watch.js <websocket url>\n');
  process.exit(64);
}

function print(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// Exit once everything printed so far has been written out.
function finish(code) {
  clearTimeout(safety);
  process.stdout.write('', () => process.exit(code));
}

const safety = setTimeout(() => {
  print({ timeout: true, after_ms: SAFETY_TIMEOUT_MS });
  finish(2);
}, SAFETY_TIMEOUT_MS);

// What a page would keep to render the workflow.
const view = { status: null, lastSeq: 0, agents: {}, outputs: 0, synthesis: null, result: null };

const ws = new WebSocket(url);

ws.onmessage = (msg) => {
  if (typeof msg.data !== 'string') {
    print({ binary: Buffer.from(msg.data).toString('base64') });
    return;
  }
  let data;
  try {
    data = JSON.parse(msg.data);
  } catch (err) {
    print({ text: msg.data }); // the answer to the plain-text `ping` is `pong`
    return;
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    print({ text: msg.data });
    return;
  }
  switch (data.type) {
    case 'connected':
      view.status = data.status;
      view.lastSeq = data.last_seq;
      ws.send('ping');
      ws.send(JSON.stringify({ type: 'ping' }));
      break;
    case 'workflow_status':
      view.status = data.status;
      break;
    case 'agent_spawned':
      view.agents[data.agent_id] = { type: data.agent_type, outputs: 0 };
      break;
    case 'agent_output':
      view.outputs += 1;
      if (view.agents[data.agent_id]) view.agents[data.agent_id].outputs += 1;
      break;
    case 'synthesis':
      view.synthesis = data.content;
      break;
    case 'completed':
      view.status = 'completed';
      view.result = data.result === undefined ? null : data.result;
      break;
    case 'error':
      if (data.fatal) view.status = 'failed';
      break;
    case 'pong':
      break;
    default:
      // command_error, broadcasts and anything newer than this page
      break;
  }
  if (typeof data.seq === 'number') view.lastSeq = data.seq;
  print(data);
};

ws.onerror = (e) => {
  print({ error: e.message });
};

ws.onclose = (e) => {
  print({ closed: true, code: e.code, reason: e.reason });
  finish(0);
};

// Not part of the browser API: `ws` lets a client see a refused handshake's
// HTTP status and body. With this listener `ws` leaves the response to us.
ws.on('unexpected-response', (req, res) => {
  const chunks = [];
  res.on('data', (chunk) => chunks.push(chunk));
  res.on('end', () => {
    const text = Buffer.concat(chunks).toString('utf8');
    const contentType = res.headers['content-type'] || null;
    let body = text;
    if (contentType && contentType.startsWith('application/json')) {
      try {
        body = JSON.parse(text);
      } catch (err) {
        body = text;
      }
    }
    print({ handshake_refused: true, status: res.statusCode, content_type: contentType, body });
    req.destroy();
    finish(1);
  });
});
