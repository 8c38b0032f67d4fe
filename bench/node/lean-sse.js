'use strict';
// A minimal Server-Sent Events client for the load generator: the SSE twin of
// lean-ws.js, with the same surface, so a subscriber does not care which one it has.
//
// Why not an EventSource package: the generator must not be the bottleneck. This
// client reads the socket into one shared buffer (`onread`), undoes HTTP/1.1 chunked
// framing in place and finds each message's `data:` line with Buffer.indexOf, handing
// the JSON over as a Buffer (valid only while the listener runs), as lean-ws.js does.
// It does not reconnect: the bench counts a dropped stream as a failure.
//
// Events: `message` (Buffer), `close` (code, reason: from Felix's `event: close`,
// 1006 without one), `error`, `unexpected-response` (req, res with statusCode).
// Methods: `close()` / `terminate()`.

const { EventEmitter } = require('events');
const net = require('net');

const EMPTY = Buffer.alloc(0);
const SHARED = Buffer.allocUnsafe(1 << 17);
const NL = 10;
const CR = 13;
const MESSAGE_END = Buffer.from('\n\n');
const DATA = Buffer.from('data: ');
const CLOSE_EVENT = Buffer.from('event: close\n');

const OPEN = 1;
const CLOSED = 3;

class LeanEventSource extends EventEmitter {
  constructor(url) {
    super();
    const target = new URL(url);
    const port = Number(target.port) || 80;
    this.readyState = 0;
    this.closeCode = 1006;
    this.closeReason = '';
    this.head = true;
    this.rest = EMPTY; // raw bytes not yet parsed (a partial head or chunk header)
    this.chunked = false;
    this.chunkLeft = 0; // bytes of the current chunk still to come
    this.skip = 0; // CRLF after a chunk still to skip
    this.pending = EMPTY; // SSE bytes of a message not yet complete
    const socket = net.connect({
      host: target.hostname,
      port,
      onread: { buffer: SHARED, callback: (length, buffer) => this.onData(buffer.subarray(0, length)) },
    });
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('connect', () => {
      socket.write(
        `GET ${target.pathname}${target.search} HTTP/1.1\r\n` +
          `Host: ${target.hostname}:${port}\r\nAccept: text/event-stream\r\n\r\n`,
      );
    });
    socket.on('error', (err) => this.emit('error', err));
    socket.on('close', () => {
      this.readyState = CLOSED;
      this.emit('close', this.closeCode, this.closeReason);
    });
  }

  onData(chunk) {
    let data = this.rest.length ? Buffer.concat([this.rest, chunk]) : chunk;
    this.rest = EMPTY;
    if (this.head) {
      const end = data.indexOf('\r\n\r\n');
      if (end < 0) {
        if (data.length > 16384) this.fault(new Error('response head too long'));
        else this.rest = Buffer.from(data);
        return;
      }
      const head = data.toString('latin1', 0, end);
      const status = Number(head.slice(9, 12));
      this.head = false;
      if (status !== 200) {
        this.emit('unexpected-response', null, { statusCode: status, resume() {} });
        this.terminate();
        return;
      }
      this.chunked = /\r\ntransfer-encoding:[ \t]*chunked/i.test(head);
      this.readyState = OPEN;
      data = data.subarray(end + 4);
    }
    if (!this.chunked) {
      this.feed(data);
      return;
    }
    this.unchunk(data);
  }

  // HTTP/1.1 chunked framing: hands each chunk's bytes to feed().
  unchunk(data) {
    let at = 0;
    while (at < data.length) {
      if (this.skip) {
        const n = Math.min(this.skip, data.length - at);
        this.skip -= n;
        at += n;
        continue;
      }
      if (this.chunkLeft) {
        const n = Math.min(this.chunkLeft, data.length - at);
        this.feed(data.subarray(at, at + n));
        this.chunkLeft -= n;
        at += n;
        if (this.chunkLeft === 0) this.skip = 2;
        if (this.readyState === CLOSED) return;
        continue;
      }
      const lineEnd = data.indexOf('\r\n', at);
      if (lineEnd < 0) {
        this.rest = Buffer.from(data.subarray(at));
        return;
      }
      const size = parseInt(data.latin1Slice(at, lineEnd), 16);
      at = lineEnd + 2;
      if (size === 0) {
        this.socket.end(); // the last chunk: the response is over
        return;
      }
      this.chunkLeft = size;
    }
  }

  // SSE bytes: each complete message (ending in a blank line) goes to onMessage().
  feed(bytes) {
    let data = this.pending.length ? Buffer.concat([this.pending, bytes]) : bytes;
    let at = 0;
    for (let end = data.indexOf(MESSAGE_END, at); end >= 0; end = data.indexOf(MESSAGE_END, at)) {
      this.onMessage(data, at, end + 1);
      at = end + 2;
      if (this.readyState === CLOSED) return;
    }
    this.pending = at === data.length ? EMPTY : Buffer.from(data.subarray(at));
  }

  // One message's lines in data[start, end), each ending in "\n". Felix puts one
  // data line in each message; comments (": ping") and `retry:` have none.
  onMessage(data, start, end) {
    let field = data.indexOf(DATA, start);
    if (field < 0 || field >= end) return;
    // Only a line start counts (a JSON string could hold "data: ").
    while (field > start && data[field - 1] !== NL) {
      field = data.indexOf(DATA, field + 1);
      if (field < 0 || field >= end) return;
    }
    let lineEnd = data.indexOf(NL, field);
    if (lineEnd < 0 || lineEnd > end) lineEnd = end;
    const payload = data.subarray(field + DATA.length, data[lineEnd - 1] === CR ? lineEnd - 1 : lineEnd);
    const close = data.indexOf(CLOSE_EVENT, start);
    if (close >= 0 && close < field && (close === start || data[close - 1] === NL)) {
      const { code, reason } = JSON.parse(payload.toString('utf8'));
      this.closeCode = code;
      this.closeReason = reason;
      this.readyState = CLOSED;
      this.socket.end();
      return;
    }
    this.emit('message', payload, false);
  }

  close() {
    this.terminate();
  }

  terminate() {
    this.readyState = CLOSED;
    this.socket.destroy();
  }

  fault(err) {
    this.emit('error', err);
    this.terminate();
  }
}

module.exports = { LeanEventSource };
