import { Timeout, Unavailable } from '../errors.js';
import { shardOf } from './hash.js';
import { sleep } from './lease.js';
import { LocalBudget } from './local-budget.js';
import { Moved } from './moved.js';
import type { ShardManager } from './shard-manager.js';

/**
 * Routing: send a call to the owner of its entity's shard.
 *
 * - Owner is this node: a plain function call into the entity host, no serialisation. While
 *   replies from peers are awaited, at most LOCAL_CALLS_PER_TURN of these run per turn of the
 *   event loop, the next ones at the next turn (LocalBudget), so replies are read meanwhile.
 * - Owner is another node: one request over the peer connection.
 * - `moved` (the node asked does not serve the shard) or no known live owner: fold in the
 *   hint, refresh the shard map, back off briefly and retry — until the call's deadline.
 *   Only then does the caller see `Unavailable`.
 * - Owner known to be unreachable (membership: the link is down and not coming straight back):
 *   `Unavailable` at once, with `retryAfterMs` set to when the shard is expected to move,
 *   instead of waiting out the deadline (unless the shard is about to move anyway).
 * - A request that was written to the owner's connection but not answered (deadline passed,
 *   or the connection dropped) is `Timeout`: it may or may not have been applied, so it is
 *   never retried here (that could apply a change twice); `Unavailable` is only ever thrown
 *   for calls that certainly did not run.
 */

/** The local entity host, as the router sees it. */
export interface LocalInvoker {
  invoke(
    kind: string,
    id: string,
    shard: number,
    handler: string,
    message: unknown,
    deadline: number,
    idempotencyKey?: string,
  ): Promise<unknown>;
}

/** The peer transport, as the router sees it. */
export interface PeerChannel {
  isConnected(peer: string): boolean;
  request(peer: string, body: unknown, timeoutMs: number): Promise<unknown>;
  /** True when `error` (from request) proves the request never reached the peer. */
  notDelivered(error: unknown): boolean;
  /**
   * Is `peer` known to be unreachable (see Membership.unreachableOwner)? Then: when its shards
   * are expected to be served again. Null when it may answer soon, or its shards move within
   * `soonMs` anyway.
   */
  knownUnreachable(peer: string, soonMs: number): { retryAfterMs: number } | null;
}

/**
 * Wire format of a routed call. `d` is the time left in ms (clocks of nodes differ); `y` is the
 * call's idempotency key, when it has one.
 */
export interface CallRequest {
  t: 'call';
  k: string;
  i: string;
  h: string;
  m: unknown;
  d: number;
  y?: string;
}

/** Per-call options of Router.call. */
export interface RouteOptions {
  /** The call's deadline, retries included; the router's default when absent. */
  timeoutMs?: number | undefined;
  /** Makes a retry of a state-changing call safe: see CallOptions.idempotencyKey. */
  idempotencyKey?: string | undefined;
}

export type CallResponse = { v: unknown } | { moved: [owner: string | null, epoch: number] };

export interface RouterOptions {
  self: string;
  defaultTimeoutMs: number;
  /**
   * Local calls run at once per turn of the event loop while replies from peers are awaited;
   * the next ones wait for the following turn, after the loop has polled sockets (LocalBudget).
   * Infinity turns it off. Default LOCAL_CALLS_PER_TURN.
   */
  localCallsPerTurn?: number | undefined;
  /**
   * Told of every call's end (error null when it succeeded), for telemetry. Called from within
   * `call` itself: wrapping the returned promise would cost every call one more promise.
   */
  onCallEnd?: ((kind: string, error: unknown, startedAt: number) => void) | undefined;
}

/**
 * A bound on starvation, not a tuning: the R benchmark at C = 64 has at most ~130 local calls
 * in a turn, so this never defers there. A budget of 32 did (docs/benchmarks.md): it moved
 * latency from remote calls to local ones (remote p99 -18 %, local p99 x6, p50 x1.8) without
 * shortening the overall p99, so the default only stops callers that never yield from keeping
 * replies unread; a service that wants replies favoured more sets `localCallsPerTurn` lower.
 */
export const LOCAL_CALLS_PER_TURN = 256;

export interface RouterStats {
  localCalls: number;
  remoteCalls: number;
  retries: number;
  servedForPeers: number;
}

const BACKOFF_MS = [1, 2, 5, 10, 20, 40, 80, 100];
/**
 * Once this node is leaving, a call waits at most this long for an owner (beyond its start or
 * the start of the leave): the new owners claim within moments when the cluster lives on, and
 * when every node is stopping nobody ever will, so the call fails as certainly not applied
 * instead of holding the HTTP server's close for a whole call deadline.
 */
const LEAVING_WAIT_MS = 1000;
/** A shard expected to move within this long is waited for rather than failed fast. */
const MOVE_SOON_MS = 250;

export class Router {
  readonly stats: RouterStats = { localCalls: 0, remoteCalls: 0, retries: 0, servedForPeers: 0 };
  private leavingSince: number | null = null;
  private readonly budget: LocalBudget;

  constructor(
    private readonly shards: ShardManager,
    private readonly peers: PeerChannel,
    private readonly local: LocalInvoker,
    private readonly options: RouterOptions,
  ) {
    this.budget = new LocalBudget(options.localCallsPerTurn ?? LOCAL_CALLS_PER_TURN);
  }

  /** Local calls that waited for a later turn of the event loop (LocalBudget). */
  get deferredLocalCalls(): number {
    return this.budget.deferred;
  }

  /** This node is leaving: calls wait for an owner only briefly from now on (LEAVING_WAIT_MS). */
  setLeaving(): void {
    this.leavingSince ??= performance.now();
  }

  shardOf(kind: string, id: string): number {
    return shardOf(kind, id, this.shards.shardCount);
  }

  call(kind: string, id: string, handler: string, message: unknown, options: RouteOptions = {}): Promise<unknown> {
    const startedAt = performance.now();
    const shard = this.shardOf(kind, id);
    if (this.shards.canServe(shard)) {
      // The common case, a call this node owns that the budget admits now, goes straight to
      // the host (no async frame of the routing loop); a Moved answer falls back to the loop.
      const wait = this.budget.admit();
      if (wait !== null) return this.route(kind, id, handler, message, options, startedAt, wait);
      this.stats.localCalls++;
      const deadline = startedAt + (options.timeoutMs ?? this.options.defaultTimeoutMs);
      return this.local.invoke(kind, id, shard, handler, message, deadline, options.idempotencyKey).then(
        (value) => {
          this.options.onCallEnd?.(kind, null, startedAt);
          return value;
        },
        (error: unknown) => {
          if (!(error instanceof Moved)) {
            this.options.onCallEnd?.(kind, error, startedAt);
            throw error;
          }
          this.shards.applyHint(shard, error.owner, error.epoch);
          return this.route(kind, id, handler, message, options, startedAt, null);
        },
      );
    }
    return this.route(kind, id, handler, message, options, startedAt, null);
  }

  /**
   * The routing loop: local or remote, retried on Moved and while no owner is known, until
   * the deadline. `admitted`: the budget's answer for a first local attempt already asked for.
   */
  private async route(
    kind: string,
    id: string,
    handler: string,
    message: unknown,
    options: RouteOptions,
    startedAt: number,
    admitted: Promise<void> | null,
  ): Promise<unknown> {
    let firstWait: Promise<void> | null | undefined = admitted ?? undefined;
    // One try around the whole routing loop (not a wrapper function) so that telling
    // onCallEnd costs no extra promise per call: every return says ok, every throw its error.
    try {
      const budget = options.timeoutMs ?? this.options.defaultTimeoutMs;
      const key = options.idempotencyKey;
      const deadline = startedAt + budget;
      const shard = this.shardOf(kind, id);
      let attempt = 0;
      let lastOwner: string | null = null;

      for (;;) {
        if (this.shards.canServe(shard)) {
          this.stats.localCalls++;
          // Over this turn's budget: wait until the loop has polled sockets (replies from peers).
          const wait = firstWait !== undefined ? firstWait : this.budget.admit();
          firstWait = undefined;
          if (wait !== null) await wait;
          try {
            const value = await this.local.invoke(kind, id, shard, handler, message, deadline, key);
            this.options.onCallEnd?.(kind, null, startedAt);
            return value;
          } catch (error) {
            if (!(error instanceof Moved)) throw error;
            this.shards.applyHint(shard, error.owner, error.epoch);
          }
        } else {
          const { owner } = this.shards.ownerOf(shard);
          lastOwner = owner;
          if (owner !== null && owner !== this.options.self && !this.peers.isConnected(owner)) {
            const unreachable = this.peers.knownUnreachable(owner, MOVE_SOON_MS);
            if (unreachable !== null) {
              throw new Unavailable(
                `the owner of ${kind}/${id} (${owner}) is unreachable from ${this.options.self}; the call was not applied. Retry in ${Math.ceil(unreachable.retryAfterMs)} ms (its shard moves then)`,
                { shard, owner, retryAfterMs: unreachable.retryAfterMs },
              );
            }
          }
          if (owner !== null && owner !== this.options.self && this.peers.isConnected(owner)) {
            const remaining = deadline - performance.now();
            if (remaining <= 0) break;
            this.stats.remoteCalls++;
            const request: CallRequest = { t: 'call', k: kind, i: id, h: handler, m: message, d: remaining };
            if (key !== undefined) request.y = key;
            let response: CallResponse;
            this.budget.awaiting++;
            try {
              response = (await this.peers.request(owner, request, remaining)) as CallResponse;
            } catch (error) {
              if (!this.peers.notDelivered(error)) {
                if (isTransportFailure(error)) {
                  // Written to the owner's connection, then no answer: it may have run.
                  throw new Timeout(
                    `no answer from ${owner} for ${kind}/${id} (${messageOf(error)}); the call may or may not have been applied`,
                    { owner },
                  );
                }
                throw error;
              }
              response = { moved: [null, 0] };
            } finally {
              this.budget.awaiting--;
            }
            if ('v' in response) {
              this.options.onCallEnd?.(kind, null, startedAt);
              return response.v;
            }
            this.shards.applyHint(shard, response.moved[0], response.moved[1]);
          }
        }

        // Not served this time: refresh the map and try again while the deadline allows.
        const now = performance.now();
        const remaining = deadline - now;
        if (remaining <= 0) break;
        if (this.leavingSince !== null && now - Math.max(startedAt, this.leavingSince) > LEAVING_WAIT_MS) break;
        this.stats.retries++;
        if (attempt > 0) void this.shards.refreshMap();
        const pause = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)]!;
        attempt++;
        await sleep(Math.min(remaining, pause * (0.5 + Math.random())));
      }
      throw new Unavailable(`no owner of ${kind}/${id} could be reached within ${budget} ms`, {
        shard,
        owner: lastOwner,
      });
    } catch (error) {
      this.options.onCallEnd?.(kind, error, startedAt);
      throw error;
    }
  }

  /** Serve a call routed to this node by a peer. */
  async serve(request: CallRequest): Promise<CallResponse> {
    const shard = this.shardOf(request.k, request.i);
    const deadline = performance.now() + Math.max(0, Number(request.d) || 0);
    if (!this.shards.canServe(shard)) return this.movedResponse(shard);
    this.stats.servedForPeers++;
    try {
      const key = typeof request.y === 'string' ? request.y : undefined;
      return { v: await this.local.invoke(request.k, request.i, shard, request.h, request.m, deadline, key) };
    } catch (error) {
      if (error instanceof Moved) return { moved: [error.owner, error.epoch] };
      throw error;
    }
  }

  private movedResponse(shard: number): CallResponse {
    const { owner, epoch } = this.shards.ownerOf(shard);
    return { moved: [owner, epoch] };
  }
}

/**
 * An error of the peer transport itself (not the owner's answer): the request timed out, or its
 * connection dropped (PeerUnreachable with maybeDelivered, code UNAVAILABLE), or the transport
 * closed under it. An error answered by the owner travels with its own code and is rethrown as is.
 */
function isTransportFailure(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (code === 'TIMEOUT') return true;
  const details = (error as { details?: Record<string, unknown> }).details;
  return code === 'UNAVAILABLE' && details?.['maybeDelivered'] === true;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
