/**
 * Property tests of the handshake state machines (src/transport/handshake.ts): an adversary who
 * does not hold a shared secret never completes a handshake, whatever frames it sends in
 * whatever order; every malformed frame is a HandshakeError (never another exception); and two
 * honest nodes connect exactly when they share a secret, each learning the other's true identity.
 */
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  AcceptorHandshake,
  DialerHandshake,
  type HandshakeConfig,
  HandshakeError,
  type HandshakeStep,
  PROTOCOL_VERSION,
} from '../../src/transport/handshake.js';
import { announce, params, runsFor } from './settings.js';

const admitAll = () => null;
const SECRET = Buffer.from('the-cluster-secret-of-the-fuzz-suite');

function config(name: string, incarnation: number, secret = SECRET, previous: Buffer[] = []): HandshakeConfig {
  return { self: { name, incarnation }, secret, previousSecrets: previous, maxFrameBytes: 1 << 20 };
}

/** Feeds a frame; returns the step, or null on a HandshakeError. Any other exception fails the property. */
function feed(machine: DialerHandshake | AcceptorHandshake, frame: unknown): HandshakeStep | null {
  try {
    return machine.onFrame(frame);
  } catch (err) {
    if (err instanceof HandshakeError) return null;
    throw err;
  }
}

const anyValue = fc.anything({
  withDate: true,
  withTypedArray: true,
  withNullPrototype: true,
  withMap: true,
  maxDepth: 2,
});
const bytesOf = (n: number) => fc.uint8Array({ minLength: n, maxLength: n }).map((a) => Buffer.from(a));
const fieldValue = fc.oneof(
  anyValue,
  bytesOf(32),
  fc.uint8Array({ maxLength: 40 }),
  fc.string({ maxLength: 300 }),
  fc.integer(),
  fc.constantFrom(PROTOCOL_VERSION, 0, 1024, 0xffffffff, -1, 2 ** 53, Number.NaN),
);
/** A frame that looks like a handshake message of type `t`, with any subset of fields, each of any value. */
function frameLike(types: string[]): fc.Arbitrary<Record<string, unknown>> {
  return fc
    .record(
      {
        t: fc.oneof(fc.constantFrom(...types), anyValue),
        v: fc.oneof(fc.constant(PROTOCOL_VERSION), fieldValue),
        name: fc.oneof(fc.string({ minLength: 1, maxLength: 20 }), fieldValue),
        inc: fc.oneof(fc.nat(), fieldValue),
        nonce: fc.oneof(bytesOf(32), fieldValue),
        maxFrame: fc.oneof(fc.integer({ min: 1024, max: 1 << 24 }), fieldValue),
        proof: fc.oneof(bytesOf(32), fieldValue),
        proofs: fc.oneof(fc.array(bytesOf(32), { maxLength: 5 }), fieldValue),
      },
      { requiredKeys: [] },
    )
    .map((r) => r as Record<string, unknown>);
}
const adversarialFrame = fc.oneof(frameLike(['hello', 'challenge', 'auth', 'welcome']), anyValue);

beforeAll(() => announce('handshake'));

describe('handshake, fuzzed', () => {
  it('an acceptor never completes with a peer that lacks the secret, and fails only with HandshakeError', () => {
    fc.assert(
      fc.property(fc.array(adversarialFrame, { minLength: 1, maxLength: 4 }), fc.boolean(), (frames, reflect) => {
        const acceptor = new AcceptorHandshake(config('b', 1), admitAll);
        let challenge: Record<string, unknown> | undefined;
        for (const frame of frames) {
          // The adversary may also echo what the acceptor sent (reflection of its own proof).
          const input = reflect && challenge !== undefined ? { t: 'auth', proof: challenge['proof'] } : frame;
          const step = feed(acceptor, input);
          if (step === null) return;
          expect(step.done).toBeUndefined();
          challenge ??= step.reply as Record<string, unknown>;
        }
      }),
      params(runsFor(0.12)),
    );
  });

  it('a dialer never completes with an acceptor that lacks the secret, and fails only with HandshakeError', () => {
    fc.assert(
      fc.property(fc.array(adversarialFrame, { minLength: 1, maxLength: 3 }), (frames) => {
        const dialer = new DialerHandshake(config('a', 1), admitAll);
        dialer.hello();
        for (const frame of frames) {
          const step = feed(dialer, frame);
          if (step === null) return;
          expect(step.done).toBeUndefined();
        }
      }),
      params(runsFor(0.08)),
    );
  });

  it('two honest nodes connect exactly when they share a secret, and learn each other’s identity', () => {
    const secrets = [0, 1, 2].map(() => randomBytes(24));
    const secretSet = fc.subarray([0, 1, 2], { minLength: 1, maxLength: 2 });
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 20 }),
        fc.nat(),
        fc.string({ minLength: 1, maxLength: 20 }),
        fc.nat(),
        secretSet,
        secretSet,
        (dName, dInc, aName, aInc, dSecrets, aSecrets) => {
          const [dOwn, ...dPrev] = dSecrets.map((i) => secrets[i]!);
          const [aOwn, ...aPrev] = aSecrets.map((i) => secrets[i]!);
          const dialer = new DialerHandshake(config(dName, dInc, dOwn, dPrev), admitAll);
          const acceptor = new AcceptorHandshake(config(aName, aInc, aOwn, aPrev), admitAll);
          const shared = dSecrets.some((i) => aSecrets.includes(i));
          const challenge = feed(acceptor, dialer.hello());
          expect(challenge?.reply).toBeDefined();
          const auth = feed(dialer, challenge!.reply);
          if (!shared) {
            expect(auth).toBeNull();
            return;
          }
          const welcome = feed(acceptor, auth!.reply);
          const done = feed(dialer, welcome!.reply);
          expect(welcome!.done?.peer).toEqual({ name: dName, incarnation: dInc });
          expect(done!.done?.peer).toEqual({ name: aName, incarnation: aInc });
        },
      ),
      params(runsFor(0.05)),
    );
  });

  it('an on-path rewrite of any handshake field never yields a false identity', () => {
    const fields = ['t', 'v', 'name', 'inc', 'nonce', 'maxFrame', 'proof', 'proofs'];
    fc.assert(
      fc.property(
        fc.constantFrom(0, 1, 2),
        fc.constantFrom(...fields),
        fc.oneof(fieldValue, fc.constant(undefined)),
        (which, field, value) => {
          const dialer = new DialerHandshake(config('a', 3), admitAll);
          const acceptor = new AcceptorHandshake(config('b', 7), admitAll);
          const tamper = (step: number, frame: object): object => {
            if (step !== which) return frame;
            const copy: Record<string, unknown> = { ...frame };
            if (value === undefined) delete copy[field];
            else copy[field] = value;
            return copy;
          };
          const challenge = feed(acceptor, tamper(0, dialer.hello()));
          if (challenge === null) return;
          const auth = feed(dialer, tamper(1, challenge.reply!));
          if (auth === null) return;
          const welcome = feed(acceptor, tamper(2, auth.reply!));
          if (welcome === null) return;
          const done = feed(dialer, welcome.reply!);
          // Whatever got through, each side knows the other under its true name and incarnation.
          expect(welcome.done?.peer).toEqual({ name: 'a', incarnation: 3 });
          if (done !== null) expect(done.done?.peer).toEqual({ name: 'b', incarnation: 7 });
        },
      ),
      params(runsFor(0.08)),
    );
  });
});
