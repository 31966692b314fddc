/**
 * Property tests of the message layer after the handshake (src/transport/protocol.ts): any
 * decoded value is either exactly one well-formed message, handed to the sink with checked
 * fields, or a ProtocolError — never another exception, never two sink calls.
 */
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ErrorShape } from '../../src/errors.js';
import { createPackr, createUnpackr, FrameDecoder, FrameError } from '../../src/transport/frame.js';
import { dispatchMessage, type MessageSink, ProtocolError } from '../../src/transport/protocol.js';
import { announce, params, runsFor } from './settings.js';

type Call = [string, ...unknown[]];

function recordingSink(calls: Call[]): MessageSink {
  const id = (name: string) => (value: number, body?: unknown) => {
    expect(Number.isInteger(value) && value >= 1 && value <= 0xffffffff).toBe(true);
    calls.push([name, value, body]);
  };
  return {
    onRequest: id('request'),
    onResponse: id('response'),
    onErrorResponse: (value: number, error: ErrorShape) => {
      expect(Number.isInteger(value) && value >= 1 && value <= 0xffffffff).toBe(true);
      expect(typeof error.code).toBe('string');
      expect(typeof error.name).toBe('string');
      expect(typeof error.message).toBe('string');
      if (error.details !== undefined)
        expect(typeof error.details === 'object' && !Array.isArray(error.details)).toBe(true);
      calls.push(['error', value, error]);
    },
    onMessage: (body) => calls.push(['message', body]),
    onPing: () => calls.push(['ping']),
    onPong: () => calls.push(['pong']),
    onBye: () => calls.push(['bye']),
    onByeAck: () => calls.push(['bye-ack']),
  };
}

/** Dispatches `value`; returns the sink calls, or 'refused' on a ProtocolError. */
function dispatch(value: unknown): Call[] | 'refused' {
  const calls: Call[] = [];
  try {
    dispatchMessage(value, recordingSink(calls));
  } catch (err) {
    if (err instanceof ProtocolError) {
      expect(calls).toEqual([]);
      return 'refused';
    }
    throw err;
  }
  expect(calls).toHaveLength(1);
  return calls;
}

const anyValue = fc.anything({
  withBigInt: true,
  withDate: true,
  withMap: true,
  withSet: true,
  withTypedArray: true,
  withNullPrototype: true,
  withSparseArray: true,
  maxDepth: 3,
});
const messageType = fc.oneof(fc.integer({ min: -2, max: 10 }), fc.constantFrom('0', 1.5, null, true, 2 ** 32));
const requestId = fc.oneof(
  fc.integer({ min: 1, max: 0xffffffff }),
  fc.constantFrom(0, -1, 0xffffffff + 1, 1.5, Number.NaN, '7', null),
);
const errorShape = fc.oneof(
  fc.record(
    { code: fc.string(), name: fc.string(), message: fc.string(), details: fc.option(anyValue, { nil: undefined }) },
    { requiredKeys: ['code', 'name', 'message'] },
  ),
  anyValue,
);
/** Arrays shaped like messages, with every field possibly of the wrong type. */
const messageLike = fc.oneof(
  fc.tuple(messageType),
  fc.tuple(messageType, fc.oneof(requestId, anyValue)),
  fc.tuple(messageType, requestId, fc.oneof(errorShape, anyValue)),
  fc.tuple(messageType, requestId, anyValue, anyValue),
  fc.array(anyValue, { maxLength: 5 }),
);

/** The value packed as msgpackr packs it, or (a bigint too large for MessagePack) some bytes. */
function packOrBytes(packr: ReturnType<typeof createPackr>, value: unknown): Uint8Array {
  try {
    return packr.pack(value);
  } catch {
    return Uint8Array.from([0xc1]);
  }
}

beforeAll(() => announce('protocol'));

describe('dispatchMessage, fuzzed', () => {
  it('any value: one well-formed message or a ProtocolError', () => {
    fc.assert(
      fc.property(fc.oneof(messageLike, anyValue), (value) => {
        dispatch(value);
      }),
      params(runsFor(0.15)),
    );
  });

  it('accepts exactly the documented shapes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 0xffffffff }), anyValue, (id, body) => {
        expect(dispatch([0, id, body])).toEqual([['request', id, body]]);
        expect(dispatch([1, id, body])).toEqual([['response', id, body]]);
        expect(dispatch([3, body])).toEqual([['message', body]]);
        for (const [type, name] of [
          [4, 'ping'],
          [5, 'pong'],
          [6, 'bye'],
          [7, 'bye-ack'],
        ] as const) {
          expect(dispatch([type])).toEqual([[name]]);
          expect(dispatch([type, body])).toBe('refused');
        }
        expect(dispatch([0, id])).toBe('refused');
        expect(dispatch([0, id, body, body])).toBe('refused');
      }),
      params(runsFor(0.02)),
    );
  });

  it('bytes off the wire: a FrameError, a ProtocolError, or messages', () => {
    const packr = createPackr();
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            messageLike.map((m) => packOrBytes(packr, m)),
            fc.uint8Array({ maxLength: 40 }),
          ),
          {
            maxLength: 4,
          },
        ),
        (bodies) => {
          const decoder = new FrameDecoder(createUnpackr(), 1 << 16, (value) => {
            dispatch(value);
          });
          const stream = Buffer.concat(
            bodies.map((body) => {
              const header = Buffer.alloc(4);
              header.writeUInt32BE(body.length);
              return Buffer.concat([header, body]);
            }),
          );
          try {
            decoder.push(stream);
          } catch (err) {
            expect(err).toBeInstanceOf(FrameError);
          }
        },
      ),
      params(runsFor(0.1)),
    );
  });
});
