/**
 * Framing: every frame is a 4-byte big-endian body length followed by a MessagePack body.
 */
import { Packr, RESERVE_START_SPACE, Unpackr } from 'msgpackr';

export const FRAME_HEADER_BYTES = 4;
/** Default cap on a frame body once the peer is authenticated. */
export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;
/** Cap on a frame body before authentication, so an unauthenticated peer cannot make us allocate. */
export const PRE_AUTH_MAX_FRAME_BYTES = 4096;

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
  frame.writeUInt32BE(bodyBytes, 0);
  return frame;
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
