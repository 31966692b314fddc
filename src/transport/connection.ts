/**
 * One TCP connection to a peer: handshake, then framed messages. It owns the socket, the frame
 * decoder, the coalescing write queue and the table of requests written to it. Everything that
 * is about the peer set (who to dial, which connection wins, handlers, events) is the mesh's.
 */
import type { Socket } from 'node:net';
import type { Packr, Unpackr } from 'msgpackr';
import { ConcordError, type ErrorShape, errorFromShape, errorToShape } from '../errors.js';
import { PeerUnreachable } from './errors.js';
import type { FaultSwitch } from './faults.js';
import { encodeFrame, FrameDecoder, FrameError, PRE_AUTH_MAX_FRAME_BYTES } from './frame.js';
import { AcceptorHandshake, DialerHandshake, HandshakeError, type HandshakeStep } from './handshake.js';
import type { PendingRequest } from './pending.js';
import {
  dispatchMessage,
  type MessageSink,
  MSG_BYE,
  MSG_BYE_ACK,
  MSG_ERROR,
  MSG_MESSAGE,
  MSG_PING,
  MSG_PONG,
  MSG_REQUEST,
  MSG_RESPONSE,
  ProtocolError,
} from './protocol.js';
import { isTlsError } from './tls.js';
import type { PeerId, TransportLogger } from './types.js';

/** Above this many queued bytes a flush hands the frames to one corked writev instead of copying them together. */
const COALESCE_COPY_LIMIT = 256 * 1024;
/** How long a gracefully ended socket may take to finish before it is destroyed. */
const END_GRACE_MS = 1000;
const MAX_REQUEST_ID = 0xffffffff;

export type Role = 'dialer' | 'acceptor';
export type ConnectionState = 'handshake' | 'open' | 'closed';

/** Settings and shared objects, the same for every connection of a mesh. */
export interface ConnectionContext {
  /** Current identity; read when a connection starts its handshake. */
  self: Readonly<PeerId>;
  secret: Buffer;
  /** Secrets also accepted from peers during a rotation (see handshake.ts). */
  previousSecrets: readonly Buffer[];
  packr: Packr;
  unpackr: Unpackr;
  maxFrameBytes: number;
  handshakeTimeoutMs: number;
  maxQueuedBytes: number;
  faults: FaultSwitch | null;
  logger: TransportLogger;
}

/** How a connection reports to its mesh. Hooks are called synchronously from socket events. */
export interface ConnectionHooks {
  /** Whether to accept `peer` (its identity is proven for a dialer, claimed for an acceptor); a reason to refuse, or null. */
  admit(conn: Connection, peer: PeerId): string | null;
  onOpen(conn: Connection): void;
  /**
   * The handshake failed: an error (wrong secret, bad frame, refusal), its timeout, or the
   * peer hung up before it completed. Not called when this side closes the connection itself.
   */
  onHandshakeFailed(conn: Connection, reason: string): void;
  /**
   * An authenticated peer sent something this side refuses (a malformed or oversized frame, a
   * message that is not one of the protocol's): the connection is being dropped for it.
   */
  onProtocolError(conn: Connection, reason: string): void;
  /** Called exactly once; `wasOpen` says whether `onOpen` had been called. */
  onClose(conn: Connection, reason: string, wasOpen: boolean): void;
  onRequest(conn: Connection, id: number, body: unknown): void;
  onMessage(conn: Connection, body: unknown): void;
  /** The peer is leaving the cluster (it sent BYE). */
  onBye(conn: Connection): void;
  /** The peer acknowledged our BYE. */
  onByeAck(conn: Connection): void;
}

export interface CloseOptions {
  /** Flush queued frames and end the socket politely instead of destroying it. */
  graceful?: boolean;
  /** Error for requests still waiting for an answer (default: PeerUnreachable, maybe delivered). */
  requestError?: (request: PendingRequest) => Error;
}

/** The reason given when a handshake does not complete in time. */
export const HANDSHAKE_TIMED_OUT = 'handshake timed out';

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function now(): number {
  return performance.now();
}

/** Frames and bytes carried, in each direction. */
export interface PeerTraffic {
  framesIn: number;
  framesOut: number;
  bytesIn: number;
  bytesOut: number;
}

export class Connection implements MessageSink {
  readonly role: Role;
  readonly socket: Socket;
  readonly remoteAddress: string;
  /** For a dialer: the peer name it meant to reach. */
  readonly target: string | null;
  state: ConnectionState = 'handshake';
  /** The authenticated peer once open (frozen; handed to handlers as `from`). */
  peer: Readonly<PeerId> | null = null;
  /** Monotonic ms (performance.now) when the handshake completed; 0 before. */
  openedAt = 0;
  /** Monotonic ms (performance.now) when the last bytes arrived. */
  lastReceivedAt: number;
  closeReason = '';
  /** Requests from the peer being served now (a leaving node waits for them to be answered). */
  inboundInFlight = 0;
  /** The peer acknowledged our BYE: it sends no new requests on this connection. */
  byeAcked = false;
  /** The peer sent BYE: it is leaving, so this connection takes no new requests from us. */
  peerLeaving = false;
  /** Resolves once the socket is fully closed. */
  readonly closed: Promise<void>;
  /** Frames and bytes this connection carried (handshake included). */
  readonly traffic: PeerTraffic = { framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0 };

  private readonly ctx: ConnectionContext;
  private readonly hooks: ConnectionHooks;
  private readonly decoder: FrameDecoder;
  private handshake: DialerHandshake | AcceptorHandshake | null;
  private handshakeTimer: NodeJS.Timeout | null;
  /** Name used for fault checks: the dial target, or the dialer's claimed name once its HELLO is in. */
  private faultName: string | null;
  /** Largest frame body the peer accepts (learned in the handshake). */
  private peerMaxFrameBytes = PRE_AUTH_MAX_FRAME_BYTES;
  private readonly pending = new Map<number, PendingRequest>();
  private lastId = 0;
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private flushScheduled = false;
  /** Set by closeWhenIdle: the reason to close with once nothing awaits an answer. */
  private idleCloseReason: string | null = null;
  private idleCloseTimer: NodeJS.Timeout | null = null;
  /** The TCP connection is established (a dial that never connected is no failed handshake). */
  private connected: boolean;

  /**
   * Pass `dial` for an outgoing connection (the peer we mean to reach); omit it for an accepted
   * one. `remote`: how to name the other end in logs when the socket has no address (a Unix socket).
   */
  constructor(
    socket: Socket,
    ctx: ConnectionContext,
    hooks: ConnectionHooks,
    dial?: { name: string; address: string },
    remote?: string,
  ) {
    this.socket = socket;
    this.role = dial === undefined ? 'acceptor' : 'dialer';
    this.ctx = ctx;
    this.hooks = hooks;
    this.target = dial?.name ?? null;
    this.faultName = this.target;
    this.remoteAddress = dial?.address ?? remote ?? `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    this.lastReceivedAt = now();
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    this.connected = dial === undefined;
    if (dial !== undefined) {
      socket.once('connect', () => {
        this.connected = true;
      });
    }

    const hsConfig = {
      self: ctx.self,
      secret: ctx.secret,
      previousSecrets: ctx.previousSecrets,
      maxFrameBytes: ctx.maxFrameBytes,
    };
    const admit = (peer: PeerId) => this.hooks.admit(this, peer);
    this.handshake = dial !== undefined ? new DialerHandshake(hsConfig, admit) : new AcceptorHandshake(hsConfig, admit);
    this.decoder = new FrameDecoder(ctx.unpackr, PRE_AUTH_MAX_FRAME_BYTES, (v) => this.onFrame(v));
    this.handshakeTimer = setTimeout(() => this.fail(HANDSHAKE_TIMED_OUT), ctx.handshakeTimeoutMs);
    this.handshakeTimer.unref();

    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // A TLS failure (a certificate from another CA, none, a record changed on the path) is
      // logged like a failed handshake or a broken frame; other socket errors are routine.
      if (isTlsError(err) && this.connected) this.fail(`TLS: ${err.code ?? ''} ${err.message}`.trim());
      else this.onSocketGone(`socket error: ${err.code ?? err.message}`);
    });
    socket.on('end', () => this.onSocketGone('peer closed the connection'));
    socket.on('close', () => this.onSocketGone('connection closed'));

    if (this.handshake instanceof DialerHandshake) this.writeValue(this.handshake.hello(), PRE_AUTH_MAX_FRAME_BYTES);
  }

  /** The socket connected (always true for an accepted one): a dial that failed never did. */
  get socketConnected(): boolean {
    return this.connected;
  }

  /** Peer name, or the address while the peer is not known yet (for logs). */
  get label(): string {
    return this.peer?.name ?? this.faultName ?? this.remoteAddress;
  }

  get pendingRequests(): number {
    return this.pending.size;
  }

  /** True when the write backlog is over the limit: new requests and messages are refused. */
  get backlogged(): boolean {
    return this.queuedBytes + this.socket.writableLength > this.ctx.maxQueuedBytes;
  }

  // ---- outgoing ---------------------------------------------------------------------------

  /** Writes a request and tracks it until answered. Settles `request` itself on failure. */
  sendRequest(request: PendingRequest): void {
    const peer = this.peer!.name;
    if (this.state !== 'open' || this.idleCloseReason !== null) {
      request.reject(new PeerUnreachable(peer, `connection to ${peer} is closed`, false));
      return;
    }
    if (this.backlogged) {
      request.reject(new PeerUnreachable(peer, `write backlog to ${peer} is full`, false));
      return;
    }
    let id = this.lastId;
    do {
      id = id >= MAX_REQUEST_ID ? 1 : id + 1;
    } while (this.pending.has(id));
    this.lastId = id;
    let frame: Buffer;
    try {
      frame = encodeFrame(this.ctx.packr, [MSG_REQUEST, id, request.body], this.peerMaxFrameBytes);
    } catch (err) {
      request.reject(new ConcordError('BAD_MESSAGE', `request to ${peer} cannot be sent: ${messageOf(err)}`));
      return;
    }
    request.id = id;
    request.sent = true;
    request.owner = this;
    request.body = undefined;
    this.pending.set(id, request);
    this.write(frame);
  }

  /** Forgets a request that timed out (a late answer is then ignored). */
  forget(request: PendingRequest): void {
    if (this.pending.get(request.id) === request) this.pending.delete(request.id);
    this.closeIfIdle();
  }

  /**
   * Closes gracefully once no request written here still awaits its answer, or after `graceMs`
   * (then those still waiting reject as `close` says: maybe delivered). Meanwhile the
   * connection stays open: answers are read, and the peer's own requests are still served.
   * The mesh sends nothing new on it (it is no longer the peer's connection there).
   */
  closeWhenIdle(reason: string, graceMs: number): void {
    if (this.state === 'closed' || this.idleCloseReason !== null) return;
    this.idleCloseReason = reason;
    if (this.closeIfIdle()) return;
    this.idleCloseTimer = setTimeout(() => this.close(reason, { graceful: true }), graceMs);
    this.idleCloseTimer.unref();
  }

  /** With closeWhenIdle pending: close now if nothing awaits an answer. True if it closed. */
  private closeIfIdle(): boolean {
    if (this.idleCloseReason === null || this.pending.size > 0 || this.state === 'closed') return false;
    this.close(this.idleCloseReason, { graceful: true });
    return true;
  }

  /**
   * Fire-and-forget. Returns false (and drops the message) if the connection is not open or its
   * backlog is full. Throws a BAD_MESSAGE ConcordError if `body` cannot be encoded.
   */
  sendMessage(body: unknown): boolean {
    if (this.state !== 'open' || this.backlogged) return false;
    let frame: Buffer;
    try {
      frame = encodeFrame(this.ctx.packr, [MSG_MESSAGE, body], this.peerMaxFrameBytes);
    } catch (err) {
      throw new ConcordError('BAD_MESSAGE', `message to ${this.label} cannot be sent: ${messageOf(err)}`);
    }
    this.write(frame);
    return true;
  }

  /**
   * Answers request `id`. Answers are dropped (the caller times out) while the backlog is full:
   * a peer that sends requests but does not read answers must not grow our memory without bound.
   */
  respond(id: number, value: unknown): void {
    if (this.state !== 'open' || this.dropAnswer(id)) return;
    let frame: Buffer;
    try {
      frame = encodeFrame(this.ctx.packr, [MSG_RESPONSE, id, value], this.peerMaxFrameBytes);
    } catch (err) {
      this.respondError(id, new ConcordError('BAD_MESSAGE', `response cannot be sent: ${messageOf(err)}`));
      return;
    }
    this.write(frame);
  }

  respondError(id: number, err: unknown): void {
    if (this.state !== 'open' || this.dropAnswer(id)) return;
    let frame: Buffer;
    try {
      frame = encodeFrame(this.ctx.packr, [MSG_ERROR, id, errorToShape(err)], this.peerMaxFrameBytes);
    } catch (encodeErr) {
      // Typically unencodable `details`: send the error without them.
      const shape = errorToShape(err);
      const plain: ErrorShape = {
        code: shape.code,
        name: shape.name,
        message: `${shape.message} (details dropped: ${messageOf(encodeErr)})`.slice(0, 4096),
      };
      frame = encodeFrame(this.ctx.packr, [MSG_ERROR, id, plain], this.peerMaxFrameBytes);
    }
    this.write(frame);
  }

  private dropAnswer(id: number): boolean {
    if (!this.backlogged) return false;
    this.ctx.logger.debug?.({ peer: this.label, id }, 'write backlog full; dropping an answer');
    return true;
  }

  ping(): void {
    if (this.state === 'open') this.write(PING_FRAME);
  }

  private writeValue(value: unknown, maxBytes: number): void {
    this.write(encodeFrame(this.ctx.packr, value, maxBytes));
  }

  /** Queues a complete frame; all frames queued before the next check phase go out in one write. */
  private write(frame: Buffer): void {
    const faults = this.ctx.faults;
    if (faults !== null && this.faultName !== null && faults.isDropped(this.faultName)) return;
    this.queue.push(frame);
    this.queuedBytes += frame.length;
    this.traffic.framesOut++;
    this.traffic.bytesOut += frame.length;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    const queue = this.queue;
    const count = queue.length;
    if (count === 0) return;
    const bytes = this.queuedBytes;
    this.queue = [];
    this.queuedBytes = 0;
    const socket = this.socket;
    if (socket.destroyed || socket.writableEnded) return;
    if (count === 1) {
      socket.write(queue[0]!);
    } else if (bytes <= COALESCE_COPY_LIMIT) {
      socket.write(Buffer.concat(queue, bytes));
    } else {
      socket.cork();
      for (const frame of queue) socket.write(frame);
      socket.uncork();
    }
  };

  // ---- incoming ---------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    this.lastReceivedAt = now();
    this.traffic.bytesIn += chunk.length;
    try {
      this.decoder.push(chunk);
    } catch (err) {
      if (err instanceof FrameError || err instanceof ProtocolError || err instanceof HandshakeError) {
        this.fail(err.message);
      } else {
        // A bug on our side; still never let it escape into the socket's event emitter.
        this.fail(`internal error handling a frame: ${messageOf(err)}`);
      }
    }
  }

  private onFrame(value: unknown): void {
    this.traffic.framesIn++;
    if (this.state === 'open') {
      dispatchMessage(value, this);
    } else if (this.state === 'handshake') {
      this.onHandshakeFrame(value);
    }
  }

  private onHandshakeFrame(value: unknown): void {
    const hs = this.handshake!;
    const step: HandshakeStep = hs.onFrame(value);
    if (hs instanceof AcceptorHandshake && this.faultName === null) this.faultName = hs.claimedPeer?.name ?? null;
    if (this.state !== 'handshake') return; // admit() may have closed us
    if (step.reply !== undefined) this.writeValue(step.reply, PRE_AUTH_MAX_FRAME_BYTES);
    if (step.done !== undefined) {
      this.state = 'open';
      this.openedAt = now();
      this.peer = Object.freeze({ name: step.done.peer.name, incarnation: step.done.peer.incarnation });
      this.faultName = step.done.peer.name;
      this.peerMaxFrameBytes = step.done.peerMaxFrameBytes;
      this.decoder.maxFrameBytes = this.ctx.maxFrameBytes;
      this.handshake = null;
      if (this.handshakeTimer !== null) clearTimeout(this.handshakeTimer);
      this.handshakeTimer = null;
      this.hooks.onOpen(this);
    }
  }

  onRequest(id: number, body: unknown): void {
    this.hooks.onRequest(this, id, body);
  }

  onResponse(id: number, body: unknown): void {
    const request = this.pending.get(id);
    if (request === undefined) return; // timed out already
    this.pending.delete(id);
    request.resolve(body);
    this.closeIfIdle();
  }

  onErrorResponse(id: number, error: ErrorShape): void {
    const request = this.pending.get(id);
    if (request === undefined) return;
    this.pending.delete(id);
    request.reject(errorFromShape(error));
    this.closeIfIdle();
  }

  onMessage(body: unknown): void {
    this.hooks.onMessage(this, body);
  }

  onPing(): void {
    this.write(PONG_FRAME);
  }

  onBye(): void {
    this.hooks.onBye(this);
  }

  onByeAck(): void {
    this.byeAcked = true;
    this.hooks.onByeAck(this);
  }

  /** Tell the peer we are leaving (graceful drain; see MSG_BYE). */
  sendBye(): void {
    if (this.state === 'open') this.write(BYE_FRAME);
  }

  sendByeAck(): void {
    if (this.state === 'open') this.write(BYE_ACK_FRAME);
  }

  onPong(): void {
    // Liveness is tracked per received chunk (lastReceivedAt); nothing else to do.
  }

  // ---- closing ----------------------------------------------------------------------------

  private onSocketGone(reason: string): void {
    if (this.state === 'handshake' && this.connected) this.hooks.onHandshakeFailed(this, reason);
    this.close(reason);
  }

  /**
   * Closes because the peer misbehaved, went silent (`misbehaved` false) or the handshake failed:
   * destroy and log a warning.
   */
  fail(reason: string, misbehaved = true): void {
    if (this.state === 'closed') return;
    if (this.state === 'open' && misbehaved) this.hooks.onProtocolError(this, reason);
    this.ctx.logger.warn(
      { remote: this.remoteAddress, peer: this.peer ?? this.faultName ?? undefined, role: this.role, reason },
      this.state === 'handshake' ? 'peer handshake failed; disconnecting' : 'peer connection failed; disconnecting',
    );
    if (this.state === 'handshake' && this.connected) this.hooks.onHandshakeFailed(this, reason);
    this.close(reason);
  }

  close(reason: string, opts: CloseOptions = {}): void {
    if (this.state === 'closed') return;
    const wasOpen = this.state === 'open';
    this.state = 'closed';
    this.closeReason = reason;
    if (this.idleCloseTimer !== null) clearTimeout(this.idleCloseTimer);
    this.idleCloseTimer = null;
    this.decoder.stop();
    this.handshake = null;
    if (this.handshakeTimer !== null) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;

    const socket = this.socket;
    if (opts.graceful === true && !socket.destroyed) {
      this.flush();
      socket.end();
      setTimeout(() => socket.destroy(), END_GRACE_MS).unref();
    } else {
      this.queue = [];
      this.queuedBytes = 0;
      socket.destroy();
    }

    if (this.pending.size > 0) {
      const peer = this.peer?.name ?? this.label;
      const requests = [...this.pending.values()];
      this.pending.clear();
      for (const request of requests) {
        request.reject(
          opts.requestError?.(request) ??
            new PeerUnreachable(peer, `connection to ${peer} closed while waiting for an answer: ${reason}`, true),
        );
      }
    }
    this.hooks.onClose(this, reason, wasOpen);
  }
}

// Constant frames, encoded once: [4] and [5].
const PING_FRAME = Buffer.from([0, 0, 0, 2, 0x91, MSG_PING]);
const BYE_FRAME = Buffer.from([0, 0, 0, 2, 0x91, MSG_BYE]);
const BYE_ACK_FRAME = Buffer.from([0, 0, 0, 2, 0x91, MSG_BYE_ACK]);
const PONG_FRAME = Buffer.from([0, 0, 0, 2, 0x91, MSG_PONG]);
