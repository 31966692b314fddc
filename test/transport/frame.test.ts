import { describe, expect, it, vi } from 'vitest';
import {
  createPackr,
  createUnpackr,
  encodeFrame,
  FrameDecoder,
  FrameError,
  PRE_AUTH_MAX_FRAME_BYTES,
} from '../../src/transport/frame.js';

const MAX = 1 << 20;

function decoderInto(out: unknown[], max = MAX): FrameDecoder {
  return new FrameDecoder(createUnpackr(), max, (v) => out.push(v));
}

const samples: unknown[] = [
  0,
  -1,
  2 ** 40 + 3,
  1.25,
  'héllo',
  null,
  true,
  [1, 'two', { three: 3 }],
  { nested: { deep: [1, 2, { x: 'y' }] }, bin: Buffer.from([1, 2, 3]) },
  'x'.repeat(70_000),
];

describe('framing', () => {
  it('round-trips values one frame per chunk', () => {
    const packr = createPackr();
    const out: unknown[] = [];
    const dec = decoderInto(out);
    for (const v of samples) dec.push(encodeFrame(packr, v, MAX));
    expect(out).toEqual(samples);
  });

  it('handles frames merged into one chunk and split at every byte boundary', () => {
    const packr = createPackr();
    const frames = samples.slice(0, 9).map((v) => Buffer.from(encodeFrame(packr, v, MAX)));
    const all = Buffer.concat(frames);

    const merged: unknown[] = [];
    decoderInto(merged).push(all);
    expect(merged).toEqual(samples.slice(0, 9));

    for (let cut = 1; cut < all.length; cut++) {
      const out: unknown[] = [];
      const dec = decoderInto(out);
      dec.push(all.subarray(0, cut));
      dec.push(all.subarray(cut));
      expect(out).toEqual(samples.slice(0, 9));
    }

    const bytewise: unknown[] = [];
    const dec = decoderInto(bytewise);
    for (let i = 0; i < all.length; i++) dec.push(all.subarray(i, i + 1));
    expect(bytewise).toEqual(samples.slice(0, 9));
    expect(dec.bufferedBytes).toBe(0);
  });

  it('rejects an oversized length prefix before allocating the body', () => {
    const alloc = vi.spyOn(Buffer, 'allocUnsafe');
    const allocSlow = vi.spyOn(Buffer, 'alloc');
    try {
      const out: unknown[] = [];
      const dec = decoderInto(out, PRE_AUTH_MAX_FRAME_BYTES);
      const header = Buffer.from([0xff, 0xff, 0xff, 0xf0]);
      const rest = Buffer.from([0xff, 0xf0, 1, 2, 3]);
      alloc.mockClear();
      allocSlow.mockClear();
      // Header split in two chunks, followed by a few body bytes.
      dec.push(header.subarray(0, 2));
      let err: unknown;
      try {
        dec.push(rest);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FrameError);
      expect((err as FrameError).kind).toBe('oversized');
      expect(alloc).not.toHaveBeenCalled();
      expect(allocSlow).not.toHaveBeenCalled();
      expect(out).toEqual([]);
    } finally {
      alloc.mockRestore();
      allocSlow.mockRestore();
    }
  });

  it('allows a frame exactly at the limit and raising the limit between frames', () => {
    const packr = createPackr();
    const out: unknown[] = [];
    const body = 'a'.repeat(PRE_AUTH_MAX_FRAME_BYTES - 3); // str16 header is 3 bytes
    const frame = encodeFrame(packr, body, PRE_AUTH_MAX_FRAME_BYTES);
    expect(frame.length).toBe(4 + PRE_AUTH_MAX_FRAME_BYTES);
    const dec = decoderInto(out, PRE_AUTH_MAX_FRAME_BYTES);
    dec.push(frame);
    expect(() => dec.push(encodeFrame(packr, `${body}b`, MAX))).toThrow(FrameError);

    const dec2 = decoderInto(out, PRE_AUTH_MAX_FRAME_BYTES);
    dec2.maxFrameBytes = MAX;
    dec2.push(encodeFrame(packr, `${body}b`, MAX));
    expect(out).toEqual([body, `${body}b`]);
  });

  it('encodeFrame refuses a body above the limit', () => {
    expect(() => encodeFrame(createPackr(), 'x'.repeat(5000), 4096)).toThrow(FrameError);
  });

  it('rejects empty, undecodable and trailing-garbage bodies as malformed', () => {
    const bad = [
      Buffer.from([0, 0, 0, 0]),
      Buffer.from([0, 0, 0, 1, 0x92]), // array of 2 with no elements
      Buffer.from([0, 0, 0, 2, 0x01, 0x02]), // two values in one body
      Buffer.from([0, 0, 0, 3, 0xdd, 0xff, 0xff]), // truncated array32 header
    ];
    for (const frame of bad) {
      const out: unknown[] = [];
      let err: unknown;
      try {
        decoderInto(out).push(frame);
      } catch (e) {
        err = e;
      }
      expect(err, frame.toString('hex')).toBeInstanceOf(FrameError);
      expect((err as FrameError).kind).toBe('malformed');
      expect(out).toEqual([]);
    }
  });

  it('stops delivering frames once stopped from inside the callback', () => {
    const packr = createPackr();
    const out: unknown[] = [];
    const dec: FrameDecoder = new FrameDecoder(createUnpackr(), MAX, (v) => {
      out.push(v);
      dec.stop();
    });
    dec.push(Buffer.concat([encodeFrame(packr, 1, MAX), encodeFrame(packr, 2, MAX)]));
    expect(out).toEqual([1]);
  });

  it('keeps queued frames intact while the packr encodes more (no buffer reuse)', () => {
    const packr = createPackr();
    const queued: Buffer[] = [];
    const values: unknown[] = [];
    for (let i = 0; i < 5000; i++) {
      const v = { i, s: 'v'.repeat(i % 300), arr: [i, i + 1] };
      values.push(v);
      queued.push(encodeFrame(packr, v, MAX));
    }
    const out: unknown[] = [];
    decoderInto(out).push(Buffer.concat(queued));
    expect(out).toEqual(values);
  });

  it('copies binary values out of the chunk they arrived in', () => {
    const packr = createPackr();
    const chunk = Buffer.from(encodeFrame(packr, { b: Buffer.from('abc') }, MAX));
    const out: { b: Buffer }[] = [];
    new FrameDecoder(createUnpackr(), MAX, (v) => out.push(v as { b: Buffer })).push(chunk);
    chunk.fill(0);
    expect(out[0]!.b.toString()).toBe('abc');
  });
});
