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
