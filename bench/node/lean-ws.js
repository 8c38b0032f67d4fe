'use strict';
// A minimal WebSocket client for the load generator (RFC 6455, no extensions).
//
// Why not `ws`: the generator must not be the bottleneck, and a `ws` client
// costs about 25 us of CPU per single-frame read (its receiver is a Writable
// stream with a state machine of several calls per frame, and every message
// is an event with a Buffer). This client parses unmasked server frames
// straight from the socket's `data` chunks and hands over strings: the same
// checks in the bench cost a fraction of that, so the server, not the
// generator, sets the pace. `ws` is still used when the bench asks for
// permessage-deflate (`--deflate`), which this client does not offer.
//
// The surface is the part of `ws` the generator uses: events `message`
// (a Buffer, valid only while the listener runs), `close` (code, reason), `error`, `unexpected-response`
// (req, res with statusCode), and `close(code)` / `terminate()`.

const crypto = require('crypto');
const { EventEmitter } = require('events');
const net = require('net');

// One key per process: servers only check that the key is 16 base64 bytes
// and answer with its digest, so computing it once keeps the handshake cheap
// for the storm, which opens thousands of connections a second.
const KEY = crypto.randomBytes(16).toString('base64');
const ACCEPT = crypto.createHash('sha1').update(KEY + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
const EMPTY = Buffer.alloc(0);
// Every socket reads into this one buffer (`onread`), which skips the stream
// machinery (a push, an event and a tick per read). Safe because each read is
// handled to the end before the next: what must outlive it is copied.
const SHARED = Buffer.allocUnsafe(1 << 17);

const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

class LeanWebSocket extends EventEmitter {
  constructor(url) {
    super();
    const target = new URL(url);
    const port = Number(target.port) || 80;
    this.readyState = 0;
    this.closeCode = 1006;
    this.closeReason = '';
    this.closeSent = false;
    this.head = true;
    this.rest = EMPTY;
    this.fragments = null;
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
          `Host: ${target.hostname}:${port}\r\n` +
          'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
          `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
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
    if (this.head) {
      const end = data.indexOf('\r\n\r\n');
      if (end < 0) {
        if (data.length > 16384) this.fault(new Error('handshake answer too long'));
        else this.rest = Buffer.from(data);
        return;
      }
      const head = data.toString('latin1', 0, end);
      const status = Number(head.slice(9, 12));
      if (status !== 101) {
        this.head = false;
        this.rest = EMPTY;
        this.emit('unexpected-response', null, { statusCode: status, resume() {} });
        return;
      }
      const accept = /\r\nsec-websocket-accept:[ \t]*([^\r]*)/i.exec(head);
      if (!accept || accept[1].trim() !== ACCEPT) {
        this.fault(new Error('handshake answer has a wrong Sec-WebSocket-Accept'));
        return;
      }
      this.head = false;
      this.readyState = OPEN;
      data = data.subarray(end + 4);
    }
    this.rest = this.parse(data);
  }

  // Handles every whole frame in `data`; returns the incomplete tail (a copy).
  parse(data) {
    let at = 0;
    while (data.length - at >= 2) {
      const first = data[at];
      const second = data[at + 1];
      if (second & 0x80) {
        this.fault(new Error('the server sent a masked frame'));
        return EMPTY;
      }
      let length = second & 0x7f;
      let start = at + 2;
      if (length === 126) {
        if (data.length - at < 4) break;
        length = data.readUInt16BE(at + 2);
        start = at + 4;
      } else if (length === 127) {
        if (data.length - at < 10) break;
        length = data.readUInt32BE(at + 2) * 2 ** 32 + data.readUInt32BE(at + 6);
        start = at + 10;
      }
      if (data.length - start < length) break;
      const payload = data.subarray(start, start + length);
      at = start + length;
      this.onFrame(first & 0x80, first & 0x0f, payload);
      if (this.readyState === CLOSED) return EMPTY;
    }
    return at === data.length ? EMPTY : Buffer.from(data.subarray(at));
  }

  onFrame(fin, opcode, payload) {
    if (opcode === 0x1 || opcode === 0x2 || opcode === 0x0) {
      if (opcode !== 0x0) this.fragments = { text: opcode === 0x1, parts: [] };
      if (!this.fragments) {
        this.fault(new Error('continuation frame without a first frame'));
        return;
      }
      if (!fin) {
        this.fragments.parts.push(Buffer.from(payload));
        return;
      }
      const { text, parts } = this.fragments;
      this.fragments = null;
      const whole = parts.length ? Buffer.concat([...parts, payload]) : payload;
      // A Buffer like `ws` gives, but only valid during the call (it may be
      // part of the shared read buffer): listeners parse it at once.
      this.emit('message', whole, !text);
    } else if (opcode === 0x8) {
      this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      this.closeReason = payload.length > 2 ? payload.toString('utf8', 2) : '';
      if (!this.closeSent) this.sendFrame(0x8, payload.subarray(0, 2));
      this.readyState = CLOSING;
      this.socket.end();
    } else if (opcode === 0x9) {
      this.sendFrame(0xa, payload);
    }
    // A pong (0xa) needs nothing.
  }

  // Client frames must be masked (RFC 6455, 5.3).
  sendFrame(opcode, payload) {
    if (this.socket.destroyed) return;
    const mask = crypto.randomBytes(4);
    const head = Buffer.from([0x80 | opcode, 0x80 | payload.length, mask[0], mask[1], mask[2], mask[3]]);
    const body = Buffer.from(payload);
    for (let i = 0; i < body.length; i++) body[i] ^= mask[i & 3];
    this.socket.write(Buffer.concat([head, body]));
    if (opcode === 0x8) this.closeSent = true;
  }

  close(code = 1000) {
    if (this.closeSent || this.readyState !== OPEN) return;
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(code, 0);
    this.sendFrame(0x8, payload);
    this.readyState = CLOSING;
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

module.exports = { LeanWebSocket };
