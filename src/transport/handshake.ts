/**
 * Mutual challenge–response over the cluster secret. The secret never crosses the wire.
 *
 *   dialer   → HELLO     { v, name, inc, nonce: nD, maxFrame }
 *   acceptor → CHALLENGE { v, name, inc, nonce: nA, maxFrame, proof: HMAC(secret, "acceptor", nD, nA, A, D),
 *                          proofs?: [the same under each previous secret] }
 *   dialer   → AUTH      { proof: HMAC(secret, "dialer", nD, nA, A, D) }
 *   acceptor → WELCOME   {}
 *
 * A and D are the acceptor's and the dialer's (name, incarnation). Each MAC covers both fresh
 * nonces, both identities and the role, so a proof cannot be replayed on another connection or
 * reflected back in the other role. Proofs are compared with `timingSafeEqual`.
 *
 * Secret rotation: a node may hold a previous secret besides its secret. Its CHALLENGE then
 * also carries `proofs`, one acceptor proof per previous secret (`proof` stays the one under
 * the secret, so a peer that knows nothing of rotation reads it as before). The dialer accepts
 * the acceptor if any of the acceptor's proofs verifies under any of its own secrets, and
 * answers AUTH under the secret that verified (its own secret preferred); the acceptor checks
 * AUTH under each of its secrets. So two nodes authenticate each other as long as they share
 * one secret, and the protocol version stays 1.
 *
 * The classes here are synchronous state machines: the connection feeds them decoded frames and
 * writes what they return, so frames that follow the handshake in the same TCP chunk are
 * handled by the open connection without any buffering in between.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { PeerId } from './types.js';

export const PROTOCOL_VERSION = 1;
const NONCE_BYTES = 32;
const PROOF_BYTES = 32;
const MAX_NAME_LENGTH = 256;
/** At most this many extra proofs in a CHALLENGE (one per previous secret). */
const MAX_EXTRA_PROOFS = 4;

export class HandshakeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HandshakeError';
  }
}

export interface HandshakeConfig {
  self: PeerId;
  secret: Buffer;
  /** Also accepted (a rotation in progress): peers that share one of these authenticate too. */
  previousSecrets?: readonly Buffer[];
  /** Largest frame body this node accepts after authentication (told to the peer). */
  maxFrameBytes: number;
}

/** Decides whether an authenticated-to-be peer is wanted; returns a rejection reason or null. */
export type AdmitPeer = (peer: PeerId) => string | null;

export interface HandshakeStep {
  /** Frame to write to the peer, if any. */
  reply?: object;
  /** Set when the handshake is complete on this side. */
  done?: { peer: PeerId; peerMaxFrameBytes: number };
}

interface HelloFields {
  name: string;
  inc: number;
  nonce: Buffer;
  maxFrame: number;
}

function field(obj: Record<string, unknown>, key: string): unknown {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

function asRecord(msg: unknown, type: string): Record<string, unknown> {
  if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) {
    throw new HandshakeError(`expected ${type}, got a non-object frame`);
  }
  const rec = msg as Record<string, unknown>;
  if (field(rec, 't') !== type) throw new HandshakeError(`expected ${type}`);
  return rec;
}

function readBytes(rec: Record<string, unknown>, key: string, length: number): Buffer {
  const v = field(rec, key);
  if (!(v instanceof Uint8Array) || v.length !== length) throw new HandshakeError(`bad ${key}`);
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

function readHello(rec: Record<string, unknown>): HelloFields {
  const v = field(rec, 'v');
  if (v !== PROTOCOL_VERSION) {
    // Not String(v): a map like {"toString": 1} would make that throw a TypeError.
    throw new HandshakeError(`unsupported protocol version ${typeof v === 'number' ? v : typeof v}`);
  }
  const name = field(rec, 'name');
  if (typeof name !== 'string' || name.length === 0 || name.length > MAX_NAME_LENGTH) {
    throw new HandshakeError('bad name');
  }
  const inc = field(rec, 'inc');
  if (typeof inc !== 'number' || !Number.isSafeInteger(inc) || inc < 0) throw new HandshakeError('bad incarnation');
  const maxFrame = field(rec, 'maxFrame');
  if (typeof maxFrame !== 'number' || !Number.isSafeInteger(maxFrame) || maxFrame < 1024 || maxFrame > 0xffffffff) {
    throw new HandshakeError('bad maxFrame');
  }
  return { name, inc, nonce: readBytes(rec, 'nonce', NONCE_BYTES), maxFrame };
}

function lengthPrefixed(h: ReturnType<typeof createHmac>, data: Buffer | string): void {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const len = Buffer.allocUnsafe(4);
  len.writeUInt32BE(bytes.length, 0);
  h.update(len);
  h.update(bytes);
}

export function computeProof(
  secret: Buffer,
  role: 'acceptor' | 'dialer',
  nonceD: Buffer,
  nonceA: Buffer,
  acceptor: PeerId,
  dialer: PeerId,
): Buffer {
  const h = createHmac('sha256', secret);
  for (const part of [
    `concord-transport/${PROTOCOL_VERSION}`,
    role,
    nonceD,
    nonceA,
    acceptor.name,
    String(acceptor.incarnation),
    dialer.name,
    String(dialer.incarnation),
  ]) {
    lengthPrefixed(h, part);
  }
  return h.digest();
}

function authenticationFailed(): HandshakeError {
  return new HandshakeError('authentication failed (wrong secret?)');
}

/** The acceptor's proofs in a CHALLENGE: `proof`, then the optional `proofs` list. */
function readAcceptorProofs(rec: Record<string, unknown>): Buffer[] {
  const proofs = [readBytes(rec, 'proof', PROOF_BYTES)];
  const extra = field(rec, 'proofs');
  if (extra === undefined) return proofs;
  if (!Array.isArray(extra) || extra.length > MAX_EXTRA_PROOFS) throw new HandshakeError('bad proofs');
  for (const p of extra) {
    if (!(p instanceof Uint8Array) || p.length !== PROOF_BYTES) throw new HandshakeError('bad proofs');
    proofs.push(Buffer.from(p.buffer, p.byteOffset, p.byteLength));
  }
  return proofs;
}

/** Every secret of this node, its own first. */
function secretsOf(cfg: HandshakeConfig): Buffer[] {
  return [cfg.secret, ...(cfg.previousSecrets ?? [])];
}

/**
 * The index of the first of `secrets` under which `proofs` contains the expected proof, or -1.
 * Every comparison is made (with timingSafeEqual), whichever matches.
 */
function matchingSecret(
  secrets: readonly Buffer[],
  proofs: readonly Buffer[],
  expected: (s: Buffer) => Buffer,
): number {
  let found = -1;
  secrets.forEach((secret, i) => {
    const want = expected(secret);
    for (const proof of proofs) {
      if (timingSafeEqual(proof, want) && found === -1) found = i;
    }
  });
  return found;
}

export class DialerHandshake {
  private readonly cfg: HandshakeConfig;
  private readonly admit: AdmitPeer;
  private readonly nonce = randomBytes(NONCE_BYTES);
  private state: 'challenge' | 'welcome' | 'done' = 'challenge';
  private peer: PeerId | null = null;
  private peerMaxFrame = 0;

  constructor(cfg: HandshakeConfig, admit: AdmitPeer) {
    this.cfg = cfg;
    this.admit = admit;
  }

  hello(): object {
    const { self, maxFrameBytes } = this.cfg;
    return {
      t: 'hello',
      v: PROTOCOL_VERSION,
      name: self.name,
      inc: self.incarnation,
      nonce: this.nonce,
      maxFrame: maxFrameBytes,
    };
  }

  onFrame(msg: unknown): HandshakeStep {
    if (this.state === 'challenge') {
      const rec = asRecord(msg, 'challenge');
      const hello = readHello(rec);
      const acceptor: PeerId = { name: hello.name, incarnation: hello.inc };
      const self = this.cfg.self;
      const secrets = secretsOf(this.cfg);
      const shared = matchingSecret(secrets, readAcceptorProofs(rec), (secret) =>
        computeProof(secret, 'acceptor', this.nonce, hello.nonce, acceptor, self),
      );
      if (shared === -1) throw authenticationFailed();
      const refusal = this.admit(acceptor);
      if (refusal !== null) throw new HandshakeError(refusal);
      this.peer = acceptor;
      this.peerMaxFrame = hello.maxFrame;
      this.state = 'welcome';
      // Answer under the secret the acceptor proved it holds.
      const proof = computeProof(secrets[shared]!, 'dialer', this.nonce, hello.nonce, acceptor, self);
      return { reply: { t: 'auth', proof } };
    }
    if (this.state === 'welcome') {
      asRecord(msg, 'welcome');
      this.state = 'done';
      return { done: { peer: this.peer!, peerMaxFrameBytes: this.peerMaxFrame } };
    }
    throw new HandshakeError('handshake already complete');
  }
}

export class AcceptorHandshake {
  private readonly cfg: HandshakeConfig;
  private readonly admit: AdmitPeer;
  private readonly nonce = randomBytes(NONCE_BYTES);
  private state: 'hello' | 'auth' | 'done' = 'hello';
  private dialer: PeerId | null = null;
  private dialerNonce: Buffer | null = null;
  private peerMaxFrame = 0;

  constructor(cfg: HandshakeConfig, admit: AdmitPeer) {
    this.cfg = cfg;
    this.admit = admit;
  }

  /** The dialer's claimed (not yet proven) identity once its HELLO is in. */
  get claimedPeer(): PeerId | null {
    return this.dialer;
  }

  onFrame(msg: unknown): HandshakeStep {
    if (this.state === 'hello') {
      const hello = readHello(asRecord(msg, 'hello'));
      const dialer: PeerId = { name: hello.name, incarnation: hello.inc };
      const refusal = this.admit(dialer);
      if (refusal !== null) throw new HandshakeError(refusal);
      this.dialer = dialer;
      this.dialerNonce = hello.nonce;
      this.peerMaxFrame = hello.maxFrame;
      this.state = 'auth';
      const self = this.cfg.self;
      const prove = (secret: Buffer) => computeProof(secret, 'acceptor', hello.nonce, this.nonce, self, dialer);
      const previous = this.cfg.previousSecrets ?? [];
      return {
        reply: {
          t: 'challenge',
          v: PROTOCOL_VERSION,
          name: self.name,
          inc: self.incarnation,
          nonce: this.nonce,
          maxFrame: this.cfg.maxFrameBytes,
          proof: prove(this.cfg.secret),
          ...(previous.length > 0 ? { proofs: previous.map(prove) } : {}),
        },
      };
    }
    if (this.state === 'auth') {
      const rec = asRecord(msg, 'auth');
      const dialer = this.dialer!;
      const proof = readBytes(rec, 'proof', PROOF_BYTES);
      const shared = matchingSecret(secretsOf(this.cfg), [proof], (secret) =>
        computeProof(secret, 'dialer', this.dialerNonce!, this.nonce, this.cfg.self, dialer),
      );
      if (shared === -1) throw authenticationFailed();
      this.state = 'done';
      return { reply: { t: 'welcome' }, done: { peer: dialer, peerMaxFrameBytes: this.peerMaxFrame } };
    }
    throw new HandshakeError('handshake already complete');
  }
}
