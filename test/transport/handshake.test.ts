import { describe, expect, it } from 'vitest';
import {
  AcceptorHandshake,
  computeProof,
  DialerHandshake,
  type HandshakeConfig,
  HandshakeError,
} from '../../src/transport/handshake.js';
import type { PeerId } from '../../src/transport/types.js';

const secret = Buffer.from('s3cret');
const cfg = (name: string, inc = 1, s = secret): HandshakeConfig => ({
  self: { name, incarnation: inc },
  secret: s,
  maxFrameBytes: 1 << 20,
});
const admitAll = () => null;

/** Runs both state machines against each other in memory. */
function run(dialer: DialerHandshake, acceptor: AcceptorHandshake): { d: PeerId; a: PeerId } {
  const challenge = acceptor.onFrame(dialer.hello());
  const auth = dialer.onFrame(challenge.reply);
  const welcome = acceptor.onFrame(auth.reply);
  const done = dialer.onFrame(welcome.reply);
  return { d: done.done!.peer, a: welcome.done!.peer };
}

describe('handshake', () => {
  it('authenticates both sides with the same secret', () => {
    const { d, a } = run(new DialerHandshake(cfg('a', 3), admitAll), new AcceptorHandshake(cfg('b', 7), admitAll));
    expect(d).toEqual({ name: 'b', incarnation: 7 }); // what the dialer learned
    expect(a).toEqual({ name: 'a', incarnation: 3 }); // what the acceptor learned
  });

  it('the dialer refuses an acceptor with another secret', () => {
    const dialer = new DialerHandshake(cfg('a'), admitAll);
    const acceptor = new AcceptorHandshake(cfg('b', 1, Buffer.from('other')), admitAll);
    const challenge = acceptor.onFrame(dialer.hello());
    expect(() => dialer.onFrame(challenge.reply)).toThrow(/authentication failed/);
  });

  it('the acceptor refuses a proof made for another connection (replay) or the other role (reflection)', () => {
    const acceptor = new AcceptorHandshake(cfg('b'), admitAll);
    const dialer = new DialerHandshake(cfg('a'), admitAll);
    const hello = dialer.hello() as { nonce: Buffer };
    const challenge = acceptor.onFrame(hello).reply as { nonce: Buffer; proof: Buffer };
    // Reflection: send the acceptor's own proof back as the dialer's.
    expect(() => acceptor.onFrame({ t: 'auth', proof: challenge.proof })).toThrow(HandshakeError);

    // Replay: a valid dialer proof for another acceptor nonce.
    const acceptor2 = new AcceptorHandshake(cfg('b'), admitAll);
    acceptor2.onFrame(hello);
    const stale = computeProof(
      secret,
      'dialer',
      hello.nonce,
      challenge.nonce,
      { name: 'b', incarnation: 1 },
      { name: 'a', incarnation: 1 },
    );
    expect(() => acceptor2.onFrame({ t: 'auth', proof: stale })).toThrow(/authentication failed/);
  });

  it('applies the admission policy on both sides', () => {
    const refuse = () => 'not you';
    expect(() =>
      new AcceptorHandshake(cfg('b'), refuse).onFrame(new DialerHandshake(cfg('a'), admitAll).hello()),
    ).toThrow('not you');
    const dialer = new DialerHandshake(cfg('a'), refuse);
    const challenge = new AcceptorHandshake(cfg('b'), admitAll).onFrame(dialer.hello());
    expect(() => dialer.onFrame(challenge.reply)).toThrow('not you');
  });

  it('rejects malformed handshake frames', () => {
    const base = new DialerHandshake(cfg('a'), admitAll).hello() as Record<string, unknown>;
    const bad: unknown[] = [
      null,
      [],
      'hello',
      { ...base, t: 'auth' },
      { ...base, v: 2 },
      { ...base, name: '' },
      { ...base, name: 'x'.repeat(300) },
      { ...base, inc: -1 },
      { ...base, inc: 1.5 },
      { ...base, nonce: Buffer.alloc(8) },
      { ...base, maxFrame: 10 },
    ];
    for (const frame of bad) {
      expect(() => new AcceptorHandshake(cfg('b'), admitAll).onFrame(frame)).toThrow(HandshakeError);
    }
  });
});

describe('handshake during a secret rotation', () => {
  const OLD = Buffer.from('the-old-cluster-secret-0001');
  const NEW = Buffer.from('the-new-cluster-secret-0002');
  const OTHER = Buffer.from('another-cluster-secret-0003');
  /** A node's secrets: its secret first, then its previous secret (if any). */
  const node = (name: string, secret: Buffer, previous?: Buffer): HandshakeConfig => ({
    self: { name, incarnation: 1 },
    secret,
    previousSecrets: previous === undefined ? [] : [previous],
    maxFrameBytes: 1 << 20,
  });

  /** The secret the dialer's AUTH was made with, recovered by recomputing it under each candidate. */
  function authSecret(dialerCfg: HandshakeConfig, acceptorCfg: HandshakeConfig): Buffer | null {
    const dialer = new DialerHandshake(dialerCfg, admitAll);
    const acceptor = new AcceptorHandshake(acceptorCfg, admitAll);
    const hello = dialer.hello() as { nonce: Buffer };
    const challenge = acceptor.onFrame(hello).reply as { nonce: Buffer };
    const auth = dialer.onFrame(challenge).reply as { proof: Buffer };
    const welcome = acceptor.onFrame(auth);
    expect(welcome.done?.peer).toEqual(dialerCfg.self);
    expect(dialer.onFrame(welcome.reply).done?.peer).toEqual(acceptorCfg.self);
    for (const candidate of [OLD, NEW, OTHER]) {
      const expected = computeProof(
        candidate,
        'dialer',
        hello.nonce,
        challenge.nonce,
        acceptorCfg.self,
        dialerCfg.self,
      );
      if (expected.equals(auth.proof)) return candidate;
    }
    return null;
  }

  it('old only ↔ old + new: both directions authenticate, under the old secret', () => {
    const oldOnly = node('a', OLD);
    const rotating = node('b', NEW, OLD);
    expect(authSecret(oldOnly, rotating)).toEqual(OLD);
    expect(
      authSecret(
        { ...rotating, self: { name: 'a', incarnation: 1 } },
        { ...oldOnly, self: { name: 'b', incarnation: 1 } },
      ),
    ).toEqual(OLD);
  });

  it('new + old ↔ new only: both directions authenticate, under the new secret', () => {
    const rotating = node('a', NEW, OLD);
    const newOnly = node('b', NEW);
    expect(authSecret(rotating, newOnly)).toEqual(NEW);
    expect(
      authSecret(
        { ...newOnly, self: { name: 'a', incarnation: 1 } },
        { ...rotating, self: { name: 'b', incarnation: 1 } },
      ),
    ).toEqual(NEW);
  });

  it('two rotating nodes prefer the new secret', () => {
    expect(authSecret(node('a', NEW, OLD), node('b', NEW, OLD))).toEqual(NEW);
  });

  it('no shared secret is refused, whichever side rotates', () => {
    const pairs: [HandshakeConfig, HandshakeConfig][] = [
      [node('a', OLD), node('b', NEW)],
      [node('a', NEW), node('b', OLD)],
      [node('a', OTHER), node('b', NEW, OLD)],
      [node('a', NEW, OLD), node('b', OTHER)],
    ];
    for (const [d, a] of pairs) {
      const dialer = new DialerHandshake(d, admitAll);
      const challenge = new AcceptorHandshake(a, admitAll).onFrame(dialer.hello());
      expect(() => dialer.onFrame(challenge.reply)).toThrow(/authentication failed/);
    }
  });

  it('the rotating acceptor refuses an AUTH made under a secret it does not hold', () => {
    const acceptor = new AcceptorHandshake(node('b', NEW, OLD), admitAll);
    const dialer = new DialerHandshake(node('a', OTHER), admitAll);
    const hello = dialer.hello() as { nonce: Buffer };
    const challenge = acceptor.onFrame(hello).reply as { nonce: Buffer };
    const forged = computeProof(
      OTHER,
      'dialer',
      hello.nonce,
      challenge.nonce,
      { name: 'b', incarnation: 1 },
      { name: 'a', incarnation: 1 },
    );
    expect(() => acceptor.onFrame({ t: 'auth', proof: forged })).toThrow(/authentication failed/);
  });

  it('a CHALLENGE carries extra proofs only with a previous secret; malformed ones are refused', () => {
    const hello = new DialerHandshake(node('a', NEW), admitAll).hello();
    const plain = new AcceptorHandshake(node('b', NEW), admitAll).onFrame(hello).reply as Record<string, unknown>;
    expect(plain).not.toHaveProperty('proofs');
    const rotating = new AcceptorHandshake(node('b', NEW, OLD), admitAll).onFrame(hello).reply as Record<
      string,
      unknown
    >;
    expect(rotating['proofs']).toHaveLength(1);
    for (const proofs of [
      Buffer.alloc(32),
      [Buffer.alloc(8)],
      ['x'],
      Array.from({ length: 5 }, () => Buffer.alloc(32)),
    ]) {
      const dialer = new DialerHandshake(node('a', NEW), admitAll);
      const challenge = new AcceptorHandshake(node('b', NEW, OLD), admitAll).onFrame(dialer.hello()).reply as Record<
        string,
        unknown
      >;
      expect(() => dialer.onFrame({ ...challenge, proofs })).toThrow('bad proofs');
    }
  });
});
