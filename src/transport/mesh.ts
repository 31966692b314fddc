/**
 * The set of peer connections of one node: who to dial, which connection wins, request routing,
 * handlers, liveness and events. See index.ts for the overview.
 */
import { EventEmitter } from 'node:events';
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import {
  createServer as createTlsServer,
  type TLSSocket,
  type Server as TlsServer,
  connect as tlsConnect,
} from 'node:tls';
import { Stopped, Timeout, Unavailable } from '../errors.js';
import { parseAddress } from './address.js';
import { type BackoffPolicy, backoffDelay, DEFAULT_BACKOFF } from './backoff.js';
import {
  Connection,
  type ConnectionContext,
  type ConnectionHooks,
  HANDSHAKE_TIMED_OUT,
  type PeerTraffic,
} from './connection.js';
import { PeerUnreachable } from './errors.js';
import type { FaultSwitch } from './faults.js';
import { createPackr, createUnpackr, DEFAULT_MAX_FRAME_BYTES, PRE_AUTH_MAX_FRAME_BYTES } from './frame.js';
import {
  isThisHost,
  localSocketDir,
  localSocketPath,
  localSocketsDefault,
  ownAddresses,
  pruneDeadSockets,
  usableSocketDir,
} from './local-socket.js';
import { PendingRequest } from './pending.js';
import { loadMeshTls, type MeshTls, type MeshTlsOptions, peerCertificateSummary, TLS_MIN_VERSION } from './tls.js';
import { type PeerId, type PeerInfo, silentLogger, type TransportLogger } from './types.js';

export interface MeshOptions {
  self: PeerId;
  /** Cluster secret for the handshake; never sent over the wire. */
  secret: string;
  /**
   * The cluster's previous secret during a rotation: peers that hold only it (or only
   * `secret`) are accepted too. See handshake.ts.
   */
  previousSecret?: string;
  /** Interface to listen on, e.g. '127.0.0.1'. */
  host: string;
  /** Port to listen on; 0 picks an ephemeral one (see `listen()`'s result). */
  port: number;
  /** Largest frame body accepted once a peer is authenticated. Default 16 MiB. Pre-auth frames are capped at 4 KiB. */
  maxFrameBytes?: number;
  /** Time for connect + handshake before the socket is dropped. Default 2000. */
  handshakeTimeoutMs?: number;
  /** Ping period. Default 1000. */
  pingIntervalMs?: number;
  /** A connection on which nothing arrived for this long is closed as silent. Default 3 ping periods. */
  silentAfterMs?: number;
  /** Per-connection write backlog above which `send` returns false and `request` fails fast. Default 64 MiB. */
  maxQueuedBytes?: number;
  /** Unauthenticated inbound connections allowed at once; more are dropped on accept. Default 128. */
  maxPendingHandshakes?: number;
  /** Re-dial delays. Default 50 ms doubling to a 1 s cap, with jitter. */
  backoff?: BackoffPolicy;
  /**
   * Mutual TLS 1.3 on every peer connection (see tls.ts for what is verified). Without it the
   * peer traffic is authenticated by the secret handshake but neither encrypted nor protected
   * against changes on the path. Every node of a cluster must use TLS or none must.
   */
  tls?: MeshTlsOptions;
  /**
   * Link with peers on this host over a Unix domain socket as well as TCP (see
   * local-socket.ts): about half the CPU per write. Default true (unless the environment
   * variable CONCORD_PEER_UNIX_SOCKETS is `0`); always off with `tls`.
   */
  localSockets?: boolean;
  /** Test-only fault injection. */
  faults?: FaultSwitch;
  logger?: TransportLogger;
}

/** Monotonic counters of one mesh. */
export interface MeshStats {
  /**
   * Handshakes that failed: a wrong secret or malformed frames on either side, a refusal, a
   * timeout, or a peer that hung up before the handshake completed. Dials that never
   * connected, and connections this node dropped itself, are not counted.
   */
  handshakeFailures: number;
  /**
   * Authenticated connections dropped because the peer sent a malformed or oversized frame or a
   * message that is not part of the protocol.
   */
  protocolErrors: number;
}

export interface MeshEvents {
  /** An authenticated connection to `peer` is open. */
  'peer-up': [peer: PeerId];
  /** The connection to `peer` closed (`reason` is human-readable). Re-dialing, if ours to do, is automatic. */
  'peer-down': [peer: PeerId, reason: string];
}

/** Answers a request; a thrown error or rejected promise goes back to the caller as an error response. */
export type RequestHandler = (from: PeerId, body: unknown) => unknown;
export type MessageHandler = (from: PeerId, body: unknown) => void;

interface PeerSlot {
  info: PeerInfo;
  /** Outgoing connection still in its handshake. */
  dial: Connection | null;
  /** Dials since the last stable connection (drives the backoff). */
  attempt: number;
  retryTimer: NodeJS.Timeout | null;
  /** The dial in flight goes to the peer's Unix socket. */
  dialLocal: boolean;
  /** The next dial goes over TCP (the Unix socket just failed to connect). */
  skipLocalOnce: boolean;
  /** The peer's incarnation whose Unix socket failed a handshake: that incarnation is dialed over TCP. */
  tcpOnlyFor: number;
}

/** How a peer connection is carried. */
export type LinkKind = 'tcp' | 'unix';

const DEFAULT_PING_INTERVAL_MS = 1000;
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 2000;
const DEFAULT_MAX_QUEUED_BYTES = 64 * 1024 * 1024;
const DEFAULT_MAX_PENDING_HANDSHAKES = 128;
const SILENT_INTERVALS = 3;
/** A connection that stayed open this long resets the re-dial backoff when it drops. */
const STABLE_CONNECTION_MS = 1000;
/**
 * How long a connection to a peer that left the peer set stays open for the answers to the
 * requests already written to it (see Mesh.retire). A live peer answers within milliseconds; a
 * dead one never does, and its requests are then rejected as maybe delivered, as they would
 * have been at once.
 */
const RETIRE_GRACE_MS = 1000;
const MAX_TIMER_MS = 0x7fffffff;

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (
    (typeof v === 'object' || typeof v === 'function') &&
    v !== null &&
    typeof (v as { then?: unknown }).then === 'function'
  );
}

function checkPositive(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (!Number.isFinite(v) || v <= 0) throw new TypeError(`MeshOptions.${name} must be a positive number`);
  return v;
}

export class Mesh extends EventEmitter<MeshEvents> {
  private readonly host: string;
  private readonly port: number;
  private readonly ctx: ConnectionContext;
  private readonly logger: TransportLogger;
  private readonly pingIntervalMs: number;
  private readonly silentAfterMs: number;
  /** When the last bytes arrived from each peer, kept after its connection closed (see lastHeardAt). */
  private readonly heard = new Map<string, number>();
  private readonly maxPendingHandshakes: number;
  private readonly backoff: BackoffPolicy;
  private readonly hooks: ConnectionHooks;

  private server: Server | null = null;
  private readonly tls: MeshTls | null;
  /** With TLS: accepted TCP connections whose TLS handshake is not complete, by remote endpoint. */
  private readonly tlsPending = new Map<string, Socket>();
  private tlsServer: TlsServer | null = null;
  private boundAddress: { host: string; port: number } | null = null;
  /** The directory of this user's peer sockets, when links over Unix sockets are on. */
  private readonly localDir: string | null;
  /** This machine's interface addresses (which peers are on this host). */
  private readonly ownHosts: ReadonlySet<string>;
  /** The Unix socket this node accepts local peers on. */
  private local: { server: Server; path: string } | null = null;
  /** Connections carried by a Unix socket. */
  private readonly localLinks = new WeakSet<Connection>();
  /** The desired peer set, by name. */
  private readonly slots = new Map<string, PeerSlot>();
  /** Authenticated connections, one per peer name (listed or not). */
  private readonly open = new Map<string, Connection>();
  private readonly closedTraffic = new Map<string, PeerTraffic>();
  /** Connections still in their handshake, both directions. */
  private readonly handshaking = new Set<Connection>();
  /** Connections to peers that left the peer set, open until their requests are answered (see retire). */
  private readonly retiring = new Set<Connection>();
  private inboundHandshakes = 0;
  /** Requests waiting for a connection to a listed peer. */
  private readonly waiting = new Map<string, Set<PendingRequest>>();
  private requestHandler: RequestHandler | null = null;
  private messageHandler: MessageHandler | null = null;
  private readonly pingTimer: NodeJS.Timeout;
  private lastTickAt = 0;
  private closing: Promise<void> | null = null;
  /** Set by drain(): this node is leaving; it dials nobody and admits no new connection. */
  private leaving = false;
  readonly stats: MeshStats = { handshakeFailures: 0, protocolErrors: 0 };

  constructor(opts: MeshOptions) {
    super();
    const { self } = opts;
    if (typeof self?.name !== 'string' || self.name.length === 0 || self.name.length > 256) {
      throw new TypeError('MeshOptions.self.name must be a non-empty string of at most 256 characters');
    }
    if (!Number.isSafeInteger(self.incarnation) || self.incarnation < 0) {
      throw new TypeError('MeshOptions.self.incarnation must be a non-negative integer');
    }
    if (typeof opts.secret !== 'string' || opts.secret.length === 0) {
      throw new TypeError('MeshOptions.secret must be a non-empty string');
    }
    if (opts.previousSecret !== undefined && (typeof opts.previousSecret !== 'string' || opts.previousSecret === '')) {
      throw new TypeError('MeshOptions.previousSecret must be a non-empty string when given');
    }
    const maxFrameBytes = checkPositive('maxFrameBytes', opts.maxFrameBytes, DEFAULT_MAX_FRAME_BYTES);
    if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < PRE_AUTH_MAX_FRAME_BYTES || maxFrameBytes > 0xffffffff) {
      throw new TypeError(`MeshOptions.maxFrameBytes must be an integer in [${PRE_AUTH_MAX_FRAME_BYTES}, 2^32)`);
    }
    this.host = opts.host;
    this.port = opts.port;
    this.logger = opts.logger ?? silentLogger;
    this.pingIntervalMs = checkPositive('pingIntervalMs', opts.pingIntervalMs, DEFAULT_PING_INTERVAL_MS);
    this.silentAfterMs = checkPositive('silentAfterMs', opts.silentAfterMs, this.pingIntervalMs * SILENT_INTERVALS);
    this.maxPendingHandshakes = checkPositive(
      'maxPendingHandshakes',
      opts.maxPendingHandshakes,
      DEFAULT_MAX_PENDING_HANDSHAKES,
    );
    this.backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.tls = opts.tls === undefined ? null : loadMeshTls(opts.tls);
    this.localDir = this.tls === null && (opts.localSockets ?? localSocketsDefault()) ? localSocketDir() : null;
    this.ownHosts = this.localDir === null ? new Set() : ownAddresses();
    if (this.tls !== null && this.tls.validTo.getTime() - Date.now() < 30 * 86_400_000) {
      this.logger.warn(
        { validTo: this.tls.validTo.toISOString() },
        'this node’s TLS certificate expires within 30 days',
      );
    }
    this.ctx = {
      self: Object.freeze({ name: self.name, incarnation: self.incarnation }),
      secret: Buffer.from(opts.secret, 'utf8'),
      previousSecrets:
        opts.previousSecret === undefined || opts.previousSecret === opts.secret
          ? []
          : [Buffer.from(opts.previousSecret, 'utf8')],
      packr: createPackr(),
      unpackr: createUnpackr(),
      maxFrameBytes,
      handshakeTimeoutMs: checkPositive('handshakeTimeoutMs', opts.handshakeTimeoutMs, DEFAULT_HANDSHAKE_TIMEOUT_MS),
      maxQueuedBytes: checkPositive('maxQueuedBytes', opts.maxQueuedBytes, DEFAULT_MAX_QUEUED_BYTES),
      faults: opts.faults ?? null,
      logger: this.logger,
    };
    this.hooks = {
      admit: (conn, peer) => this.admit(conn, peer),
      onOpen: (conn) => this.onOpen(conn),
      onHandshakeFailed: (conn, reason) => {
        this.stats.handshakeFailures++;
        this.onHandshakeFailed(conn, reason);
      },
      onProtocolError: () => {
        this.stats.protocolErrors++;
      },
      onClose: (conn, reason, wasOpen) => this.onClose(conn, reason, wasOpen),
      onRequest: (conn, id, body) => this.dispatchRequest(conn, id, body),
      onMessage: (conn, body) => this.dispatchMessage(conn, body),
      onBye: (conn) => this.onPeerBye(conn),
      onByeAck: () => {},
    };
    opts.faults?.onAllow((peers) => this.redialHealed(peers));
    this.lastTickAt = performance.now();
    this.pingTimer = setInterval(this.tick, this.pingIntervalMs);
    this.pingTimer.unref();
  }

  // ---- public API -------------------------------------------------------------------------

  /** This node's identity as presented in handshakes. */
  get self(): Readonly<PeerId> {
    return this.ctx.self;
  }

  /**
   * Changes this node's incarnation (e.g. once the membership table assigned one, or after the
   * node lost its lease and rejoined). Every connection is closed so that it is re-established
   * under the new identity (dials restart at once; lower-named peers re-dial us): requests in
   * flight on them reject with `PeerUnreachable` (`maybeDelivered` true).
   */
  setSelfIncarnation(incarnation: number): void {
    if (!Number.isSafeInteger(incarnation) || incarnation < 0) {
      throw new TypeError('incarnation must be a non-negative integer');
    }
    if (this.closing !== null || incarnation === this.ctx.self.incarnation) return;
    this.ctx.self = Object.freeze({ name: this.ctx.self.name, incarnation });
    this.logger.info({ self: this.ctx.self }, 'peer transport identity changed');
    for (const conn of [...this.open.values(), ...this.handshaking, ...this.retiring]) {
      conn.close('own incarnation changed');
    }
    for (const slot of this.slots.values()) {
      if (slot.retryTimer !== null) clearTimeout(slot.retryTimer);
      slot.retryTimer = null;
      slot.attempt = 0;
      this.dialNow(slot);
    }
  }

  /** Starts accepting peers. Resolves with the bound address (useful with port 0). */
  async listen(): Promise<{ host: string; port: number }> {
    if (this.closing !== null) throw new Stopped('mesh is closed');
    if (this.server !== null) throw new Error('Mesh.listen() was already called');
    const server = createServer((socket) => this.onAccepted(socket));
    this.server = server;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(this.port, this.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      this.server = null;
      throw err;
    }
    server.on('error', (err) => this.logger.warn({ err: messageOf(err) }, 'peer listener error'));
    const addr = server.address() as AddressInfo;
    this.boundAddress = { host: addr.address, port: addr.port };
    await this.listenLocal(addr.port);
    this.logger.info(
      { self: this.self, ...this.boundAddress, tls: this.tls === null ? false : TLS_MIN_VERSION },
      'peer transport listening',
    );
    return { ...this.boundAddress };
  }

  /**
   * Also accept peers on `<localDir>/<port>.sock` (see local-socket.ts). Best effort: when the
   * directory or the socket cannot be used, peers on this host reach us over TCP as any other.
   */
  private async listenLocal(port: number): Promise<void> {
    if (this.localDir === null || !usableSocketDir(this.localDir, true)) return;
    const path = localSocketPath(this.localDir, port);
    if (path === null) return;
    try {
      // A socket file at our port's path is a dead node's: nobody else can hold the port now.
      if (lstatSync(path).isSocket()) unlinkSync(path);
    } catch {
      // No such file.
    }
    const server = createServer((socket) => this.onInbound(socket, true));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(path, () => {
          server.off('error', reject);
          resolve();
        });
      });
      chmodSync(path, 0o600);
      this.local = { server, path };
      pruneDeadSockets(this.localDir);
    } catch (err) {
      server.close();
      this.logger.warn(
        { path, err: messageOf(err) },
        'cannot listen for peers on this host on a Unix socket; they use TCP',
      );
      return;
    }
    server.on('error', (err) => this.logger.warn({ err: messageOf(err) }, 'local peer listener error'));
  }

  /** How the open connection to `peer` is carried, or null if there is none. */
  linkKind(peer: string): LinkKind | null {
    const conn = this.open.get(peer);
    return conn === undefined ? null : this.linkOf(conn);
  }

  /** How each open peer connection is carried, by peer name. */
  links(): Map<string, LinkKind> {
    const result = new Map<string, LinkKind>();
    for (const [name, conn] of this.open) result.set(name, this.linkOf(conn));
    return result;
  }

  private linkOf(conn: Connection): LinkKind {
    return this.localLinks.has(conn) ? 'unix' : 'tcp';
  }

  /** The bound address once `listen()` resolved. */
  get address(): { host: string; port: number } | null {
    return this.boundAddress === null ? null : { ...this.boundAddress };
  }

  /**
   * Sets the desired peer set (normally the live rows of the membership table; this node's own
   * name is ignored). Only one connection exists per pair: the node whose name sorts lower
   * (JavaScript string order) dials; the higher one accepts. Dials are retried with exponential
   * backoff and jitter (capped at ~1 s) for as long as the peer stays in the set.
   *
   * Connections to an incarnation older than the listed one are closed. Connections to peers
   * no longer in the set get nothing new, and close once the requests already written to them
   * are answered or time out, within RETIRE_GRACE_MS (see retire). A connection to a NEWER
   * incarnation than listed is kept (the list lags behind a restart). An acceptor also admits authenticated lower-named peers it does not list yet (its
   * view of the membership may lag too) until the next `setPeers` that still omits them.
   */
  setPeers(peers: readonly PeerInfo[]): void {
    if (this.closing !== null) return;
    const desired = new Map<string, PeerInfo>();
    for (const p of peers) {
      if (p.name === this.self.name) continue;
      const prev = desired.get(p.name);
      if (prev === undefined || p.incarnation > prev.incarnation) {
        desired.set(p.name, { name: p.name, incarnation: p.incarnation, address: p.address });
      }
    }
    for (const [name, slot] of this.slots) {
      if (!desired.has(name)) this.dropSlot(slot, 'peer left the peer set');
    }
    for (const [name, conn] of this.open) {
      const want = desired.get(name);
      if (want === undefined) this.retire(conn, 'peer left the peer set');
      else if (conn.peer!.incarnation < want.incarnation) {
        conn.close(`replaced by incarnation ${want.incarnation}`, { graceful: true });
      }
    }
    for (const info of desired.values()) {
      let slot = this.slots.get(info.name);
      if (slot === undefined) {
        slot = {
          info,
          dial: null,
          attempt: 0,
          retryTimer: null,
          dialLocal: false,
          skipLocalOnce: false,
          tcpOnlyFor: -1,
        };
        this.slots.set(info.name, slot);
      } else if (slot.info.address !== info.address || slot.info.incarnation !== info.incarnation) {
        slot.info = info;
        // A dial in flight targets the old address or incarnation: start over right away.
        slot.dial?.close('peer address or incarnation changed');
        if (slot.retryTimer !== null) clearTimeout(slot.retryTimer);
        slot.retryTimer = null;
        slot.attempt = 0;
      }
      if (slot.dial === null && slot.retryTimer === null) this.dialNow(slot);
    }
  }

  /** Registers the handler for incoming requests (replacing any previous one). */
  onRequest(handler: RequestHandler): void {
    this.requestHandler = handler;
  }

  /** Registers the handler for incoming fire-and-forget messages (replacing any previous one). */
  onMessage(handler: MessageHandler): void {
    this.messageHandler = handler;
  }

  /**
   * Sends `body` to `peer`'s request handler and resolves with its answer. Rejects with:
   * - `PeerUnreachable` (code UNAVAILABLE) if `peer` is neither connected nor in the peer set,
   *   if no connection to it opened within `timeoutMs`, if it left the set while the request
   *   waited, if the write backlog is full, or if the connection dropped before the answer
   *   (then `maybeDelivered` is true; a peer that left the set after the request was written
   *   is given RETIRE_GRACE_MS to answer first);
   * - `Timeout` if the request was written but no answer came within `timeoutMs`;
   * - the handler's error (rebuilt with `errorFromShape`, so `code`/`message`/`details` survive);
   * - a BAD_MESSAGE `ConcordError` if `body` cannot be encoded or exceeds the frame limit;
   * - `Stopped` if the mesh is closed.
   * Requests to a name are served by whatever incarnation is connected under that name. This
   * node's own name is never a peer (local calls are the caller's business).
   */
  request(peer: string, body: unknown, timeoutMs: number): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      if (this.closing !== null) {
        reject(new Stopped('peer transport is closed'));
        return;
      }
      const ms = Number.isFinite(timeoutMs) ? Math.min(Math.max(timeoutMs, 1), MAX_TIMER_MS) : MAX_TIMER_MS;
      const request = new PendingRequest(peer, body, ms, resolve, reject, this.onRequestTimeout);
      const conn = this.open.get(peer);
      if (conn !== undefined) {
        conn.sendRequest(request);
        return;
      }
      if (!this.slots.has(peer)) {
        request.reject(new PeerUnreachable(peer, `${peer} is not connected and not in the peer set`));
        return;
      }
      let queue = this.waiting.get(peer);
      if (queue === undefined) {
        queue = new Set();
        this.waiting.set(peer, queue);
      }
      queue.add(request);
    });
  }

  /**
   * Fire-and-forget; messages to one peer arrive in the order sent, for as long as one
   * connection lasts. Returns false (message dropped) if there is no open connection to `peer`
   * or its write backlog is full. Throws a BAD_MESSAGE `ConcordError` if `body` cannot be
   * encoded or exceeds the frame limit. A message dropped by a fault switch still returns true.
   */
  send(peer: string, body: unknown): boolean {
    if (this.closing !== null) return false;
    const conn = this.open.get(peer);
    return conn?.sendMessage(body) ?? false;
  }

  isConnected(peer: string): boolean {
    return this.open.has(peer);
  }

  /**
   * performance.now() of the last bytes received from `peer`, on its open connection or on the
   * last one it had; null if it never connected. (Membership uses it to tell how long a peer
   * has been unreachable.)
   */
  lastHeardAt(peer: string): number | null {
    const conn = this.open.get(peer);
    if (conn !== undefined) return conn.lastReceivedAt;
    return this.heard.get(peer) ?? null;
  }

  /** Peers with an open, authenticated connection. */
  connectedPeers(): PeerId[] {
    return [...this.open.values()].map((c) => ({ ...c.peer! }));
  }

  /**
   * Stops listening, ends every connection (flushing what is queued), rejects pending and
   * waiting requests with `Stopped`, and emits 'peer-down' for each open connection.
   * Idempotent; resolves once the listener and all sockets are closed.
   */
  close(): Promise<void> {
    if (this.closing !== null) return this.closing;
    let resolveClosing!: () => void;
    this.closing = new Promise((r) => {
      resolveClosing = r;
    });
    clearInterval(this.pingTimer);
    for (const slot of this.slots.values()) {
      if (slot.retryTimer !== null) clearTimeout(slot.retryTimer);
      slot.retryTimer = null;
    }
    for (const queue of this.waiting.values()) {
      for (const request of queue) request.reject(new Stopped('peer transport closed'));
    }
    this.waiting.clear();
    for (const socket of this.tlsPending.values()) socket.destroy();
    this.tlsPending.clear();
    const conns = [...this.open.values(), ...this.handshaking, ...this.retiring];
    for (const conn of conns) {
      // Requests already written may have been acted on: their callers are told so (the
      // default error, PeerUnreachable with maybeDelivered), never a plain "stopped".
      conn.close('mesh closed', { graceful: conn.state === 'open' });
    }
    this.slots.clear();
    // The Unix socket's server first (closing it removes its file), while this node still holds
    // the TCP port: a node that binds the port after us makes its own file at that path.
    const servers = [this.local?.server ?? null, this.server].filter((s): s is Server => s !== null);
    const serversClosed = servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    Promise.all([...serversClosed, ...conns.map((c) => c.closed)]).then(() => resolveClosing());
    return this.closing;
  }

  // ---- connections ------------------------------------------------------------------------

  /**
   * A TCP connection arrived. Without TLS it starts its handshake at once; with TLS it is handed
   * to the TLS server first, and counts against the pending-handshake limit until TLS is done.
   */
  private onAccepted(socket: Socket): void {
    if (this.tls === null) {
      this.onInbound(socket);
      return;
    }
    if (this.closing !== null) {
      socket.destroy();
      return;
    }
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    if (this.inboundHandshakes + this.tlsPending.size >= this.maxPendingHandshakes) {
      this.logger.warn(
        { remote, limit: this.maxPendingHandshakes },
        'too many unauthenticated peer connections; dropping',
      );
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    this.tlsPending.set(remote, socket);
    socket.once('close', () => {
      if (this.tlsPending.get(remote) === socket) this.tlsPending.delete(remote);
    });
    this.tlsServerFor(this.tls).emit('connection', socket);
  }

  /** The TLS server that wraps accepted sockets (it never listens itself: onAccepted feeds it). */
  private tlsServerFor(tls: MeshTls): TlsServer {
    if (this.tlsServer !== null) return this.tlsServer;
    const server = createTlsServer({
      cert: tls.options.cert,
      key: tls.options.key,
      ca: tls.options.ca,
      minVersion: TLS_MIN_VERSION,
      requestCert: true,
      rejectUnauthorized: true,
      handshakeTimeout: this.ctx.handshakeTimeoutMs,
    });
    server.on('secureConnection', (socket: TLSSocket) => {
      this.tlsPending.delete(`${socket.remoteAddress}:${socket.remotePort}`);
      this.onInbound(socket);
    });
    server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
      this.stats.handshakeFailures++;
      this.logger.warn(
        {
          remote: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`,
          role: 'acceptor',
          reason: `TLS: ${err.code ?? ''} ${err.message}`.trim(),
        },
        'peer TLS handshake failed; disconnecting',
      );
      socket.destroy();
    });
    this.tlsServer = server;
    return server;
  }

  private onInbound(socket: Socket, local = false): void {
    if (this.closing !== null) {
      socket.destroy();
      return;
    }
    if (this.inboundHandshakes >= this.maxPendingHandshakes) {
      this.logger.warn(
        {
          remote: local ? 'local socket' : `${socket.remoteAddress}:${socket.remotePort}`,
          limit: this.maxPendingHandshakes,
        },
        'too many unauthenticated peer connections; dropping',
      );
      socket.destroy();
      return;
    }
    this.inboundHandshakes++;
    const conn = new Connection(socket, this.ctx, this.hooks, undefined, local ? 'local socket' : undefined);
    if (local) this.localLinks.add(conn);
    this.handshaking.add(conn);
  }

  private isDialerFor(name: string): boolean {
    return this.self.name < name;
  }

  /** True when a connection to the listed incarnation (or a newer one) is open. */
  private isSatisfied(slot: PeerSlot): boolean {
    const conn = this.open.get(slot.info.name);
    return conn !== undefined && conn.peer!.incarnation >= slot.info.incarnation;
  }

  /**
   * Test fault switch: traffic to `peers` flows again. A handshake begun during the partition
   * had its frames dropped and would only fail at its timeout, and the redial backoff grew
   * meanwhile: drop those attempts and dial again now. Inbound handshakes in progress are
   * closed too (their answers may have been dropped); their dialers retry promptly.
   */
  private redialHealed(peers: string[]): void {
    if (this.closing !== null || this.leaving) return;
    for (const conn of [...this.handshaking]) {
      if (conn.role === 'acceptor') conn.close('partition healed; expecting a fresh handshake');
    }
    for (const name of peers) {
      const slot = this.slots.get(name);
      if (slot === undefined || this.open.has(name)) continue;
      slot.dial?.close('partition healed; dialing again');
      slot.dial = null;
      if (slot.retryTimer !== null) clearTimeout(slot.retryTimer);
      slot.retryTimer = null;
      slot.attempt = 0;
      this.dialNow(slot);
    }
  }

  private dialNow(slot: PeerSlot): void {
    slot.retryTimer = null;
    const name = slot.info.name;
    if (this.closing !== null || this.slots.get(name) !== slot || slot.dial !== null) return;
    if (!this.isDialerFor(name) || this.isSatisfied(slot)) return;
    const addr = parseAddress(slot.info.address);
    if (addr === null) {
      // Nothing to retry until setPeers brings a usable address.
      this.logger.warn({ peer: name, address: slot.info.address }, 'peer has an unusable address; not dialing');
      return;
    }
    const localPath = this.localPathFor(slot, addr.host, addr.port);
    slot.dialLocal = localPath !== null;
    const socket =
      localPath !== null
        ? connect({ path: localPath })
        : this.tls === null
          ? connect({ host: addr.host, port: addr.port })
          : tlsConnect({
              host: addr.host,
              port: addr.port,
              secureContext: this.tls.clientContext,
              minVersion: TLS_MIN_VERSION,
              // The chain to the cluster CA is verified; names are not (see tls.ts): the secret
              // handshake inside TLS authenticates the node.
              checkServerIdentity: () => undefined,
            });
    const conn = new Connection(socket, this.ctx, this.hooks, { name, address: slot.info.address });
    if (localPath !== null) this.localLinks.add(conn);
    slot.dial = conn;
    this.handshaking.add(conn);
  }

  /** The Unix socket to dial `slot`'s peer on, or null for TCP. */
  private localPathFor(slot: PeerSlot, host: string, port: number): string | null {
    if (slot.skipLocalOnce) {
      slot.skipLocalOnce = false;
      return null;
    }
    if (this.localDir === null || slot.tcpOnlyFor === slot.info.incarnation) return null;
    if (!isThisHost(host, this.ownHosts) || !usableSocketDir(this.localDir, false)) return null;
    return localSocketPath(this.localDir, port);
  }

  private scheduleDial(slot: PeerSlot): void {
    if (this.closing !== null || this.leaving || slot.dial !== null || slot.retryTimer !== null) return;
    if (!this.isDialerFor(slot.info.name) || this.isSatisfied(slot)) return;
    const delay = backoffDelay(this.backoff, slot.attempt);
    slot.attempt++;
    slot.retryTimer = setTimeout(() => this.dialNow(slot), delay);
    slot.retryTimer.unref();
  }

  private dropSlot(slot: PeerSlot, reason: string): void {
    const name = slot.info.name;
    this.slots.delete(name);
    if (slot.retryTimer !== null) clearTimeout(slot.retryTimer);
    slot.retryTimer = null;
    slot.dial?.close(reason);
    const queue = this.waiting.get(name);
    if (queue !== undefined) {
      this.waiting.delete(name);
      for (const request of queue) request.reject(new PeerUnreachable(name, `${name}: ${reason}`));
    }
  }

  private admit(conn: Connection, peer: PeerId): string | null {
    if (this.closing !== null) return 'mesh is closing';
    if (this.leaving) return 'node is leaving the cluster';
    if (conn.role === 'dialer') {
      const target = conn.target!;
      if (peer.name !== target) return `expected ${target} at this address but found ${peer.name}`;
      const slot = this.slots.get(target);
      if (slot === undefined || slot.dial !== conn) return `${target} is no longer wanted`;
      if (peer.incarnation < slot.info.incarnation) {
        return `${target} answered with incarnation ${peer.incarnation}, older than the listed ${slot.info.incarnation}`;
      }
      return null;
    }
    if (peer.name === this.self.name) return 'peer claims our own name';
    if (!(peer.name < this.self.name)) {
      return `${peer.name} dialed ${this.self.name}, but the lower name dials the higher one`;
    }
    const listed = this.slots.get(peer.name)?.info.incarnation ?? -1;
    const connected = this.open.get(peer.name)?.peer?.incarnation ?? -1;
    if (peer.incarnation < listed || peer.incarnation < connected) {
      return `stale incarnation ${peer.incarnation} of ${peer.name}`;
    }
    return null;
  }

  private onOpen(conn: Connection): void {
    this.forgetHandshake(conn);
    const peer = conn.peer!;
    const slot = this.slots.get(peer.name);
    // The backoff is reset only once the connection proved stable (see onClose), so a peer that
    // accepts and then immediately drops us is not re-dialed in a tight loop.
    if (slot !== undefined && slot.dial === conn) slot.dial = null;
    const existing = this.open.get(peer.name);
    if (existing !== undefined) {
      if (existing.peer!.incarnation > peer.incarnation) {
        conn.close(`a newer incarnation of ${peer.name} is connected`);
        return;
      }
      // The peer re-dialed (it considers the old connection dead) or restarted: the new one wins.
      existing.close(`replaced by a new connection from ${peer.name}/${peer.incarnation}`);
    }
    this.open.set(peer.name, conn);
    if (slot !== undefined && slot.retryTimer !== null) {
      clearTimeout(slot.retryTimer);
      slot.retryTimer = null;
    }
    const certificate = peerCertificateSummary(conn.socket);
    this.logger.info(
      {
        peer,
        remote: conn.remoteAddress,
        role: conn.role,
        link: this.linkOf(conn),
        ...(certificate ? { certificate } : {}),
      },
      'peer connected',
    );
    const queue = this.waiting.get(peer.name);
    if (queue !== undefined) {
      this.waiting.delete(peer.name);
      for (const request of queue) conn.sendRequest(request);
    }
    this.emitSafely('peer-up', { ...peer });
  }

  /**
   * Frames and bytes exchanged with each peer (by name) since this mesh started: the closed
   * connections' totals plus the open ones'. Connections whose handshake failed are not counted.
   */
  traffic(): Map<string, PeerTraffic> {
    const result = new Map<string, PeerTraffic>();
    for (const [name, t] of this.closedTraffic) result.set(name, { ...t });
    for (const [name, conn] of this.open) addTraffic(result, name, conn.traffic);
    return result;
  }

  /**
   * `conn`'s peer left the peer set: from now on nothing new is sent to it, and it no longer
   * counts as connected (peer-down now). But the requests already written to it may still be
   * answered: a node leaves the set when its membership row lapses or is evicted, and it may
   * well be alive and answering (with "moved", say, once it has stopped serving). Failing them
   * at once would turn answers on their way into "may or may not have been applied". So the
   * connection stays readable until every one of them is settled, answered or timed out, for at
   * most RETIRE_GRACE_MS, and then closes gracefully; what is still unanswered then is rejected
   * as before (PeerUnreachable, maybe delivered).
   */
  private retire(conn: Connection, reason: string): void {
    this.detach(conn, reason, 'peer disconnected');
    this.retiring.add(conn);
    conn.closeWhenIdle(reason, RETIRE_GRACE_MS);
  }

  /**
   * `conn` stops being its peer's connection here (it closed, the peer said BYE, or the peer
   * left the set): nothing new is sent on it, and listeners hear `peer-down` once.
   */
  private detach(conn: Connection, reason: string, message: string): void {
    const peer = conn.peer!;
    if (this.open.get(peer.name) !== conn) return;
    this.open.delete(peer.name);
    this.heard.set(peer.name, conn.lastReceivedAt);
    this.logger.info({ peer, reason }, message);
    this.emitSafely('peer-down', { ...peer }, reason);
  }

  private onClose(conn: Connection, reason: string, wasOpen: boolean): void {
    this.retiring.delete(conn);
    if (wasOpen && conn.peer) addTraffic(this.closedTraffic, conn.peer.name, conn.traffic);
    this.forgetHandshake(conn);
    const slot = conn.target === null ? undefined : this.slots.get(conn.target);
    if (slot !== undefined && slot.dial === conn) {
      slot.dial = null;
      if (!wasOpen && slot.dialLocal && !conn.socketConnected && !this.leaving) {
        // No socket at the peer's path, or a dead node's file (refused): TCP at once, no backoff.
        slot.skipLocalOnce = true;
        this.dialNow(slot);
        return;
      }
    }
    if (wasOpen) {
      const peer = conn.peer!;
      const redial = this.slots.get(peer.name);
      if (redial !== undefined && performance.now() - conn.openedAt >= STABLE_CONNECTION_MS) redial.attempt = 0;
      this.detach(conn, reason, 'peer disconnected');
    } else {
      this.logger.debug?.({ peer: conn.label, remote: conn.remoteAddress, reason }, 'peer connection attempt ended');
    }
    const retry = this.slots.get(conn.peer?.name ?? conn.target ?? '');
    // A peer that said BYE is gone for good under this incarnation: a restart is a new one.
    if (retry !== undefined && !conn.peerLeaving) this.scheduleDial(retry);
  }

  /**
   * A dial over the peer's Unix socket reached something that failed the handshake (not only
   * slow to answer, as a paused peer is): not the peer we want, so TCP for this incarnation.
   */
  private onHandshakeFailed(conn: Connection, reason: string): void {
    if (conn.role !== 'dialer' || !this.localLinks.has(conn) || reason === HANDSHAKE_TIMED_OUT) return;
    const slot = this.slots.get(conn.target!);
    if (slot !== undefined && slot.dial === conn) slot.tcpOnlyFor = slot.info.incarnation;
  }

  private forgetHandshake(conn: Connection): void {
    if (this.handshaking.delete(conn) && conn.role === 'acceptor') this.inboundHandshakes--;
  }

  // ---- requests and messages --------------------------------------------------------------

  private readonly onRequestTimeout = (request: PendingRequest): void => {
    if (request.done) return;
    const peer = request.peer;
    if (request.sent) {
      request.owner?.forget(request);
      request.reject(new Timeout(`no answer from ${peer} within ${request.timeoutMs} ms`, { peer }));
      return;
    }
    const queue = this.waiting.get(peer);
    if (queue !== undefined) {
      queue.delete(request);
      if (queue.size === 0) this.waiting.delete(peer);
    }
    request.reject(new PeerUnreachable(peer, `no connection to ${peer} within ${request.timeoutMs} ms`));
  };

  private dispatchRequest(conn: Connection, id: number, body: unknown): void {
    const handler = this.requestHandler;
    if (handler === null) {
      conn.respondError(id, new Unavailable(`${this.self.name} is not serving peer requests yet`));
      return;
    }
    let result: unknown;
    try {
      result = handler(conn.peer!, body);
    } catch (err) {
      conn.respondError(id, err);
      return;
    }
    if (isThenable(result)) {
      conn.inboundInFlight++;
      Promise.resolve(result).then(
        (value) => {
          conn.inboundInFlight--;
          conn.respond(id, value);
        },
        (err: unknown) => {
          conn.inboundInFlight--;
          conn.respondError(id, err);
        },
      );
    } else {
      conn.respond(id, result);
    }
  }

  /**
   * The peer is leaving (BYE): take it out of the open set at once, so no new request is
   * sent to it (the router then looks for the shard's next owner), and acknowledge. Requests
   * already sent stay pending on the connection and are answered before the peer closes it.
   */
  private onPeerBye(conn: Connection): void {
    conn.peerLeaving = true;
    this.detach(conn, 'peer is leaving', 'peer is leaving');
    conn.sendByeAck();
  }

  /**
   * Graceful leave, before close(): say BYE on every open connection, then wait (at most
   * `timeoutMs`) until each peer has acknowledged and every request it sent before the ACK
   * has been answered. From now on no connection is dialed or admitted.
   */
  async drain(timeoutMs: number): Promise<void> {
    if (this.closing !== null) return;
    this.leaving = true;
    for (const slot of this.slots.values()) {
      if (slot.retryTimer !== null) clearTimeout(slot.retryTimer);
      slot.retryTimer = null;
    }
    const conns = [...this.open.values()];
    for (const conn of conns) conn.sendBye();
    const deadline = performance.now() + timeoutMs;
    const drained = () => conns.every((c) => c.state === 'closed' || (c.byeAcked && c.inboundInFlight === 0));
    while (!drained() && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    if (!drained()) this.logger.warn({ timeoutMs }, 'peers did not acknowledge the leave in time; closing anyway');
  }

  private dispatchMessage(conn: Connection, body: unknown): void {
    const handler = this.messageHandler;
    if (handler === null) return;
    try {
      handler(conn.peer!, body);
    } catch (err) {
      this.logger.warn({ peer: conn.peer, err: messageOf(err) }, 'peer message handler threw');
    }
  }

  // ---- liveness ---------------------------------------------------------------------------

  private readonly tick = (): void => {
    const t = performance.now();
    const interval = this.pingIntervalMs;
    // If our own event loop was blocked, data from peers may be sitting unread in the kernel:
    // skip one round of silence checks rather than blame the peers.
    const stalled = t - this.lastTickAt > interval * 2;
    this.lastTickAt = t;
    for (const conn of this.open.values()) {
      const silentFor = t - conn.lastReceivedAt;
      if (!stalled && silentFor > this.silentAfterMs) {
        conn.fail(`peer silent for ${Math.round(silentFor)} ms`, false);
      } else {
        conn.ping();
      }
    }
  };

  private emitSafely<K extends keyof MeshEvents>(event: K, ...args: MeshEvents[K]): void {
    try {
      (this.emit as (e: K, ...a: MeshEvents[K]) => boolean)(event, ...args);
    } catch (err) {
      this.logger.warn({ event, err: messageOf(err) }, 'peer transport event listener threw');
    }
  }
}

function addTraffic(into: Map<string, PeerTraffic>, name: string, t: PeerTraffic): void {
  const sum = into.get(name) ?? { framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0 };
  sum.framesIn += t.framesIn;
  sum.framesOut += t.framesOut;
  sum.bytesIn += t.bytesIn;
  sum.bytesOut += t.bytesOut;
  into.set(name, sum);
}
