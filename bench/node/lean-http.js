'use strict';
// A minimal HTTP/1.1 keep-alive client for the bench's publisher.
//
// Why not `http.request`: Node's client builds a ClientRequest, an agent
// lookup, an outgoing message and a parser callback chain for every request;
// measured in the publisher, that made it the generator's largest process,
// sharing its one core with the subscribers. Here a connection writes each
// request as one string and parses the status line and Content-Length of the
// answer itself. One request is in flight per connection, as the publisher's
// streams need.

const net = require('net');

const EMPTY = Buffer.alloc(0);
const SHARED = Buffer.allocUnsafe(1 << 16);

class LeanHttpConnection {
  constructor(host, port) {
    this.host = host;
    this.port = port;
    this.socket = null;
    this.pending = null; // {resolve, reject, timer}
    this.rest = EMPTY;
    this.head = null; // {status, length} once the answer's head is in
  }

  connect() {
    const socket = net.connect({
      host: this.host,
      port: this.port,
      onread: { buffer: SHARED, callback: (length, buffer) => this.onData(buffer.subarray(0, length)) },
    });
    socket.setNoDelay(true);
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => {
      if (this.socket === socket) this.socket = null;
      this.fail(new Error('the server closed the connection before answering'));
    });
    this.socket = socket;
    this.rest = EMPTY;
    this.head = null;
  }

  // Resolves with {status, body}; rejects on a broken connection or after timeoutMs.
  request(method, path, body, timeoutMs = 15000) {
    if (this.pending) return Promise.reject(new Error('one request at a time per connection'));
    if (this.socket === null || this.socket.destroyed) this.connect();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(new Error(`no answer within ${timeoutMs / 1000} s`));
        if (this.socket) this.socket.destroy();
      }, timeoutMs);
      this.pending = { resolve, reject, timer };
      this.socket.write(
        `${method} ${path} HTTP/1.1\r\nHost: ${this.host}:${this.port}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    });
  }

  onData(chunk) {
    let data = this.rest.length ? Buffer.concat([this.rest, chunk]) : chunk;
    if (this.head === null) {
      const end = data.indexOf('\r\n\r\n');
      if (end < 0) {
        this.rest = Buffer.from(data);
        return;
      }
      const head = data.toString('latin1', 0, end);
      const length = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head);
      if (!length || /\r\ntransfer-encoding:/i.test(head)) {
        this.fail(new Error(`answer without a Content-Length: ${head.slice(0, 200)}`));
        this.socket.destroy();
        return;
      }
      // Hypercorn closes a keep-alive connection after `keep_alive_max_requests`
      // (1,000) answers and says so: the next request then opens a new one.
      const close = /\r\nconnection:[ \t]*close/i.test(head);
      this.head = { status: Number(head.slice(9, 12)), length: Number(length[1]), close };
      data = data.subarray(end + 4);
    }
    if (data.length < this.head.length) {
      this.rest = Buffer.from(data);
      return;
    }
    const body = data.toString('utf8', 0, this.head.length);
    const { status, close } = this.head;
    this.rest = EMPTY;
    this.head = null;
    if (close && this.socket) {
      const closing = this.socket;
      this.socket = null;
      closing.removeAllListeners('close');
      closing.on('error', () => {});
      closing.destroy();
    }
    const pending = this.pending;
    this.pending = null;
    if (pending) {
      clearTimeout(pending.timer);
      pending.resolve({ status, body });
    }
  }

  fail(err) {
    const pending = this.pending;
    this.pending = null;
    if (pending) {
      clearTimeout(pending.timer);
      pending.reject(err);
    }
  }

  close() {
    if (this.socket) this.socket.destroy();
  }
}

module.exports = { LeanHttpConnection };
