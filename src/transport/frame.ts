/**
 * Framing: every frame is a 4-byte big-endian body length followed by a MessagePack body.
 */
import { Packr, RESERVE_START_SPACE, Unpackr } from 'msgpackr';

export const FRAME_HEADER_BYTES = 4;
/** Default cap on a frame body once the peer is authenticated. */
export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;
/** Cap on a frame body before authentication, so an unauthenticated peer cannot make us allocate. */
export const PRE_AUTH_MAX_FRAME_BYTES = 4096;

/**
 * Deepest nesting of arrays and maps accepted in a frame body (the top-level value is depth 0).
 * Deeper values are refused by the decoder before they are decoded (msgpackr decodes
 * recursively, so a frame of nested arrays could otherwise exhaust the stack) and by the encoder
 * before they are sent, so that a node never sends a frame its peer must refuse.
 */
export const MAX_NESTING_DEPTH = 512;

export type FrameErrorKind = 'oversized' | 'malformed';

export class FrameError extends Error {
  readonly kind: FrameErrorKind;

  constructor(kind: FrameErrorKind, message: string) {
    super(message);
    this.name = 'FrameError';
    this.kind = kind;
  }
}

/** Plain MessagePack: no msgpackr records, so any MessagePack implementation can read our frames. */
export function createPackr(): Packr {
  return new Packr({ useRecords: false });
}

/**
 * `copyBuffers` so that a binary value in a decoded body does not pin the whole socket chunk it
 * arrived in (bodies may be kept for a long time, e.g. as entity state).
 */
export function createUnpackr(): Unpackr {
  return new Unpackr({ useRecords: false, copyBuffers: true });
}

/**
 * Encodes `value` as one complete frame (header + body) in a single buffer.
 *
 * The buffer is a view into the packr's slab. msgpackr only rewinds over returned bytes in
 * REUSE/RESET_BUFFER_MODE, which we never use, so the view stays valid while it waits in a write
 * queue (test/transport/frame.test.ts checks this).
 */
export function encodeFrame(packr: Packr, value: unknown, maxBodyBytes: number): Buffer {
  const frame = packr.pack(value, RESERVE_START_SPACE | FRAME_HEADER_BYTES);
  const bodyBytes = frame.length - FRAME_HEADER_BYTES;
  if (bodyBytes > maxBodyBytes) {
    throw new FrameError('oversized', `frame body of ${bodyBytes} bytes exceeds the limit of ${maxBodyBytes}`);
  }
  // What the peer's decoder would refuse (and disconnect for) is refused here instead.
  const problem = checkMessagePack(frame, FRAME_HEADER_BYTES, frame.length, MAX_NESTING_DEPTH);
  if (problem !== null) throw new FrameError('malformed', `value cannot be sent between nodes: ${problem}`);
  frame.writeUInt32BE(bodyBytes, 0);
  return frame;
}

// Scratch stacks of checkMessagePack (it is synchronous and not re-entrant).
const pendingValues = new Float64Array(MAX_NESTING_DEPTH + 2);
const inMap = new Uint8Array(MAX_NESTING_DEPTH + 2);

/**
 * Checks that `buf[start, end)` holds exactly one MessagePack value that concord exchanges, without
 * decoding it and without recursion; returns null if so, else what is wrong. It refuses:
 * - truncated values, and bytes after the value;
 * - the never-used type 0xc1;
 * - extension types, except the two msgpackr itself writes for plain JavaScript values: the
 *   standard timestamp (type -1, a `Date`) and msgpackr's `undefined` (fixext1 of type 0);
 * - arrays and maps claiming more elements than there are bytes left (msgpackr would allocate
 *   the claimed length up front: 5 bytes could make it allocate hundreds of megabytes);
 * - map keys other than strings and integers;
 * - nesting deeper than `maxDepth` (at most MAX_NESTING_DEPTH).
 */
export function checkMessagePack(buf: Uint8Array, start: number, end: number, maxDepth: number): string | null {
  const limit = Math.min(maxDepth, MAX_NESTING_DEPTH);
  let pos = start;
  let depth = 0;
  pendingValues[0] = 1;
  inMap[0] = 0;
  for (;;) {
    while (pendingValues[depth] === 0) {
      if (depth === 0) return pos === end ? null : `${end - pos} bytes after the value`;
      depth--;
    }
    if (pos >= end) return 'truncated value';
    const remaining = pendingValues[depth]!;
    const isKey = inMap[depth] === 1 && remaining % 2 === 0;
    pendingValues[depth] = remaining - 1;
    const b = buf[pos++]!;
    if (b <= 0x7f || b >= 0xe0) continue; // fixint
    let items = -1; // a container's element count (maps count keys and values)
    let isMapType = 0;
    let skip = 0; // bytes of payload to skip
    if (b <= 0x8f) {
      items = (b & 0x0f) * 2;
      isMapType = 1;
    } else if (b <= 0x9f) {
      items = b & 0x0f;
    } else if (b <= 0xbf) {
      skip = b & 0x1f;
    } else {
      const avail = end - pos;
      switch (b) {
        case 0xc0:
        case 0xc2:
        case 0xc3:
          if (isKey) return 'a map key that is not a string or an integer';
          continue;
        case 0xc1:
          return 'the never-used type 0xc1';
        case 0xc4:
        case 0xd9:
          if (avail < 1) return 'truncated value';
          skip = 1 + buf[pos]!;
          break;
        case 0xc5:
        case 0xda:
          if (avail < 2) return 'truncated value';
          skip = 2 + ((buf[pos]! << 8) | buf[pos + 1]!);
          break;
        case 0xc6:
        case 0xdb:
          if (avail < 4) return 'truncated value';
          skip = 4 + readU32(buf, pos);
          break;
        case 0xca:
          skip = 4;
          break;
        case 0xcb:
          skip = 8;
          break;
        case 0xcc:
        case 0xd0:
          skip = 1;
          break;
        case 0xcd:
        case 0xd1:
          skip = 2;
          break;
        case 0xce:
        case 0xd2:
          skip = 4;
          break;
        case 0xcf:
        case 0xd3:
          skip = 8;
          break;
        case 0xd4: // fixext1: undefined (type 0) or an invalid Date (type -1)
          if (avail < 2) return 'truncated value';
          if (buf[pos] !== 0x00 && buf[pos] !== 0xff) return `extension type ${extType(buf[pos]!)}`;
          skip = 2;
          break;
        case 0xd6: // fixext4, fixext8: timestamps
        case 0xd7:
          if (avail < 1) return 'truncated value';
          if (buf[pos] !== 0xff) return `extension type ${extType(buf[pos]!)}`;
          skip = 1 + (b === 0xd6 ? 4 : 8);
          break;
        case 0xc7: // ext8: only the 12-byte timestamp
          if (avail < 2) return 'truncated value';
          if (buf[pos + 1] !== 0xff) return `extension type ${extType(buf[pos + 1]!)}`;
          if (buf[pos] !== 12) return 'a timestamp of a length other than 4, 8 or 12 bytes';
          skip = 2 + 12;
          break;
        case 0xd5:
        case 0xd8:
        case 0xc8:
        case 0xc9: {
          const typeAt = b === 0xd5 || b === 0xd8 ? pos : pos + (b === 0xc8 ? 2 : 4);
          if (typeAt >= end) return 'truncated value';
          return `extension type ${extType(buf[typeAt]!)}`;
        }
        case 0xdc:
          if (avail < 2) return 'truncated value';
          items = (buf[pos]! << 8) | buf[pos + 1]!;
          pos += 2;
          break;
        case 0xdd:
          if (avail < 4) return 'truncated value';
          items = readU32(buf, pos);
          pos += 4;
          break;
        case 0xde:
          if (avail < 2) return 'truncated value';
          items = ((buf[pos]! << 8) | buf[pos + 1]!) * 2;
          isMapType = 1;
          pos += 2;
          break;
        case 0xdf:
          if (avail < 4) return 'truncated value';
          items = readU32(buf, pos) * 2;
          isMapType = 1;
          pos += 4;
          break;
      }
    }
    if (items >= 0) {
      if (isKey) return 'a map key that is not a string or an integer';
      if (items > end - pos) return `${isMapType ? 'a map' : 'an array'} claiming more elements than the frame holds`;
      if (depth + 1 > limit) return `values nested deeper than ${limit} levels`;
      if (items > 0) {
        depth++;
        pendingValues[depth] = items;
        inMap[depth] = isMapType;
      }
      continue;
    }
    if (isKey && !(b <= 0xbf || b === 0xd9 || b === 0xda || b === 0xdb || (b >= 0xcc && b <= 0xd3))) {
      return 'a map key that is not a string or an integer';
    }
    if (skip > end - pos) return 'truncated value';
    pos += skip;
  }
}

function readU32(buf: Uint8Array, pos: number): number {
  return ((buf[pos]! << 24) >>> 0) + ((buf[pos + 1]! << 16) | (buf[pos + 2]! << 8) | buf[pos + 3]!);
}

function extType(byte: number): number {
  return byte > 127 ? byte - 256 : byte;
}

/**
 * Streaming decoder: feed it socket chunks in order; it calls `onValue` once per complete frame,
 * whether frames are split across chunks or several arrive in one. A length above
 * `maxFrameBytes` (which may be raised between frames, e.g. after authentication) is rejected as
 * soon as the 4 header bytes are in, before any body buffer is allocated.
 *
 * `push` throws `FrameError` on a bad frame; the decoder is then unusable (close the socket).
 * `onValue` may call `stop()` (e.g. because it closed the connection); the rest of the chunk
 * is then ignored.
 */
export class FrameDecoder {
  maxFrameBytes: number;
  private readonly unpackr: Unpackr;
  private readonly onValue: (value: unknown) => void;
  private readonly header = Buffer.alloc(FRAME_HEADER_BYTES);
  private headerFilled = 0;
  /** Body being assembled from several chunks, or null between frames. */
  private body: Buffer | null = null;
  private bodyFilled = 0;
  private stopped = false;

  constructor(unpackr: Unpackr, maxFrameBytes: number, onValue: (value: unknown) => void) {
    this.unpackr = unpackr;
    this.maxFrameBytes = maxFrameBytes;
    this.onValue = onValue;
  }

  stop(): void {
    this.stopped = true;
    this.body = null;
  }

  /** Bytes of an incomplete frame currently held. */
  get bufferedBytes(): number {
    return this.headerFilled + this.bodyFilled;
  }

  push(chunk: Buffer): void {
    const end = chunk.length;
    let off = 0;
    while (off < end && !this.stopped) {
      const body = this.body;
      if (body !== null) {
        const n = Math.min(body.length - this.bodyFilled, end - off);
        chunk.copy(body, this.bodyFilled, off, off + n);
        this.bodyFilled += n;
        off += n;
        if (this.bodyFilled === body.length) {
          this.body = null;
          this.bodyFilled = 0;
          this.emit(body, 0, body.length);
        }
        continue;
      }
      let len: number;
      if (this.headerFilled === 0 && end - off >= FRAME_HEADER_BYTES) {
        len = chunk.readUInt32BE(off);
        off += FRAME_HEADER_BYTES;
      } else {
        const n = Math.min(FRAME_HEADER_BYTES - this.headerFilled, end - off);
        chunk.copy(this.header, this.headerFilled, off, off + n);
        this.headerFilled += n;
        off += n;
        if (this.headerFilled < FRAME_HEADER_BYTES) return;
        this.headerFilled = 0;
        len = this.header.readUInt32BE(0);
      }
      this.checkLength(len);
      if (end - off >= len) {
        // Whole body in this chunk: decode in place (no copy, no per-frame view).
        const start = off;
        off += len;
        this.emit(chunk, start, off);
      } else {
        this.body = Buffer.allocUnsafe(len);
        this.bodyFilled = 0;
      }
    }
  }

  private checkLength(len: number): void {
    if (len > this.maxFrameBytes) {
      this.stop();
      throw new FrameError('oversized', `frame length ${len} exceeds the limit of ${this.maxFrameBytes} bytes`);
    }
    if (len === 0) {
      this.stop();
      throw new FrameError('malformed', 'empty frame');
    }
  }

  private emit(source: Buffer, start: number, end: number): void {
    const problem = checkMessagePack(source, start, end, MAX_NESTING_DEPTH);
    if (problem !== null) {
      this.stop();
      throw new FrameError('malformed', `invalid frame body: ${problem}`.slice(0, 200));
    }
    let value: unknown;
    try {
      value = this.unpackr.unpack(source, { start, end });
    } catch (err) {
      this.stop();
      throw new FrameError(
        'malformed',
        `undecodable frame body: ${err instanceof Error ? err.message : String(err)}`.slice(0, 200),
      );
    }
    this.onValue(value);
  }
}
