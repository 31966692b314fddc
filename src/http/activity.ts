import type { AppNode } from './app.js';
import type { MemberStats, NodeIntrospection } from './introspection.js';

/**
 * What the dashboard shows, as it happens: this node looks at its own view of the cluster a few
 * times a second (membership and the shard map, which it keeps current anyway) and turns the
 * differences into events — joins, leaves, suspicions, evictions, deaths, healed partitions,
 * failovers and handoffs (which shards, from whom to whom, how long), fence rejections — and
 * keeps a state snapshot with every member's load (calls/s and p99, asked of the members over
 * the peer transport once a second). `GET /events` streams both (Server-Sent Events).
 */

export type ActivityKind =
  | 'join'
  | 'member'
  | 'leave'
  | 'left'
  | 'suspected'
  | 'evicted'
  | 'dead'
  | 'healed'
  | 'restarted'
  | 'failover'
  | 'handoff'
  | 'fence'
  | 'demo';

export interface ActivityEvent {
  /** Wall-clock ms. */
  at: number;
  kind: ActivityKind;
  text: string;
  /** Failovers and handoffs: the member the shards came from, where they went, how long it took. */
  from?: string;
  to?: Record<string, number>;
  shards?: number;
  ms?: number;
}

/** A process of `concord demo` (the demo's own view of its children). */
export interface DemoProcess {
  name: string;
  url: string;
  /** running, paused, partitioned, starting, killed (by us or anyone), exited. */
  state: string;
  pid: number | null;
}

export interface DashboardMember {
  name: string;
  status: string;
  connected: boolean;
  httpAddress: string | null;
  leaseExpiresInMs: number;
  shards: number;
  suspectedBy: string[];
  evictedBy: string[] | null;
  stats: MemberStats | null;
}

export interface DashboardState {
  self: string;
  ready: boolean;
  notReadyReason: string | null;
  ownership: string;
  members: DashboardMember[];
  /** Owner of each shard (null: none live) and its epoch. */
  shards: { owners: (string | null)[]; epochs: number[] };
  /** The demo's processes, when this node was started by `concord demo` with its controls. */
  demo: DemoProcess[] | null;
}

const TICK_MS = 200;
const STATS_EVERY_MS = 1000;
/** Moves of one member's shards are reported together once none came for this long. */
const MOVE_SETTLE_MS = 600;
const KEEP_EVENTS = 200;

interface PendingMoves {
  from: string;
  kind: 'failover' | 'handoff';
  to: Record<string, number>;
  count: number;
  startedAt: number;
  lastAt: number;
}

export class ClusterActivity {
  private readonly events: ActivityEvent[] = [];
  private readonly listeners = new Set<(event: ActivityEvent) => void>();
  private timer: NodeJS.Timeout | null = null;
  private previous: {
    members: Map<string, { status: string; incarnation: number }>;
    owners: (string | null)[];
  } | null = null;
  /** performance.now() since when each member has been down (not alive, or not connected). */
  private readonly downSince = new Map<string, number>();
  private readonly leavingSince = new Map<string, number>();
  private readonly aliveSince = new Map<string, number>();
  private readonly pending = new Map<string, PendingMoves>();
  private fencedSeen = 0;
  private stats: Record<string, MemberStats> = {};
  private statsAt = 0;
  private statsRunning = false;
  private demo: DemoProcess[] | null = null;

  constructor(
    private readonly node: AppNode,
    private readonly introspection: NodeIntrospection,
  ) {}

  start(): void {
    if (this.timer) return;
    this.fencedSeen = this.introspection.counters().fenced;
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref();
    this.tick();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.listeners.clear();
  }

  /** Called with every new event; returns the unsubscribe function. */
  subscribe(listener: (event: ActivityEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  recent(): ActivityEvent[] {
    return [...this.events];
  }

  /** The demo's processes changed (concord demo tells its children over IPC). */
  setDemo(processes: DemoProcess[]): void {
    this.demo = processes;
  }

  /** An event from outside this node's view (the demo saying what it did). */
  notice(kind: ActivityKind, text: string): void {
    this.push({ at: Date.now(), kind, text });
  }

  state(): DashboardState {
    const status = this.node.status();
    const owners = this.introspection.shardOwners();
    return {
      self: status.self,
      ready: status.ready,
      notReadyReason: status.notReadyReason,
      ownership: this.introspection.ownership,
      members: status.members.map((m) => ({
        name: m.name,
        status: m.status,
        connected: m.connected,
        httpAddress: m.httpAddress,
        leaseExpiresInMs: Math.round(m.leaseExpiresInMs),
        shards: status.shards.owners[m.name] ?? 0,
        suspectedBy: m.suspectedBy,
        evictedBy: m.evictedBy,
        stats: m.name === status.self ? this.introspection.localStats() : (this.stats[m.name] ?? null),
      })),
      shards: { owners, epochs: this.introspection.shardEpochs() },
      demo: this.demo,
    };
  }

  private push(event: ActivityEvent): void {
    this.events.push(event);
    if (this.events.length > KEEP_EVENTS) this.events.shift();
    for (const listener of this.listeners) listener(event);
  }

  private tick(): void {
    const t = performance.now();
    // Only while someone watches (the peers are asked over the transport).
    if (this.listeners.size > 0 && t - this.statsAt >= STATS_EVERY_MS && !this.statsRunning) {
      this.statsAt = t;
      this.statsRunning = true;
      void this.introspection
        .memberStats()
        .then((stats) => {
          this.stats = stats;
        })
        .catch(() => {})
        .finally(() => {
          this.statsRunning = false;
        });
    }
    const status = this.node.status();
    const owners = this.introspection.shardOwners();
    const members = new Map(status.members.map((m) => [m.name, m]));
    const now = Date.now();

    // Membership changes.
    const before = this.previous?.members;
    for (const m of status.members) {
      const down = m.status !== 'alive' || !m.connected;
      if (down && m.status !== 'leaving' && m.status !== 'joining') {
        if (!this.downSince.has(m.name)) this.downSince.set(m.name, t);
      } else if (!down) this.downSince.delete(m.name);
      if (m.status === 'leaving' && !this.leavingSince.has(m.name)) this.leavingSince.set(m.name, t);
      if (m.status === 'alive' && !this.aliveSince.has(m.name)) this.aliveSince.set(m.name, t);
      if (m.status !== 'alive') this.aliveSince.delete(m.name);
      if (!before) continue;
      const was = before.get(m.name);
      if (!was) {
        this.push({ at: now, kind: 'join', text: `${m.name} registered (${m.status})` });
        continue;
      }
      if (was.incarnation !== m.incarnation && m.status !== 'dead') {
        this.push({ at: now, kind: 'restarted', text: `${m.name} is back with a new incarnation (${m.status})` });
      }
      if (was.status === m.status) continue;
      this.push(this.membershipEvent(now, m.name, was.status, m.status, m.suspectedBy, m.evictedBy));
    }
    if (before) {
      for (const [name, was] of before) {
        if (members.has(name)) continue;
        if (was.status === 'leaving') this.push({ at: now, kind: 'left', text: `${name} left the cluster` });
        this.downSince.delete(name);
        this.leavingSince.delete(name);
      }
    }

    // Shard moves, grouped per previous owner.
    const last = this.previous?.owners;
    if (last) {
      for (let shard = 0; shard < owners.length; shard++) {
        const from = last[shard] ?? null;
        const to = owners[shard] ?? null;
        if (to === null || from === to) continue;
        const source = from ?? this.lastOwner[shard] ?? null;
        if (source === null || source === to) continue;
        this.recordMove(source, to, t);
      }
    }
    for (let shard = 0; shard < owners.length; shard++) {
      const owner = owners[shard];
      if (owner) this.lastOwner[shard] = owner;
    }
    for (const [from, moves] of this.pending) {
      if (t - moves.lastAt < MOVE_SETTLE_MS) continue;
      this.pending.delete(from);
      const where = Object.entries(moves.to)
        .sort((a, b) => b[1] - a[1])
        .map(([name, count]) => `${name} (${count})`)
        .join(', ');
      const ms = Math.round(moves.lastAt - moves.startedAt);
      const text =
        moves.kind === 'failover'
          ? `failover: ${moves.count} shard${moves.count === 1 ? '' : 's'} of ${from} → ${where}, ${formatMs(ms)} after ${from} went down`
          : `handoff: ${moves.count} shard${moves.count === 1 ? '' : 's'} of ${from} → ${where} in ${formatMs(ms)}`;
      this.push({ at: now, kind: moves.kind, text, from, to: moves.to, shards: moves.count, ms });
    }

    // Fence rejections (writes or activations of this node refused: a newer owner exists).
    const fenced = this.introspection.counters().fenced;
    if (fenced > this.fencedSeen) {
      const n = fenced - this.fencedSeen;
      this.push({
        at: now,
        kind: 'fence',
        text: `${n} write${n === 1 ? '' : 's'} of ${status.self} refused by the fence: a newer owner exists; the callers retried there`,
      });
    }
    this.fencedSeen = fenced;
    this.previous = {
      members: new Map(status.members.map((m) => [m.name, { status: m.status, incarnation: m.incarnation }])),
      owners,
    };
  }

  private readonly lastOwner: (string | null)[] = [];

  private recordMove(from: string, to: string, t: number): void {
    let moves = this.pending.get(from);
    if (!moves) {
      const failover = this.downSince.has(from);
      const since = failover
        ? this.downSince.get(from)!
        : (this.leavingSince.get(from) ?? this.aliveSince.get(to) ?? t);
      moves = { from, kind: failover ? 'failover' : 'handoff', to: {}, count: 0, startedAt: since, lastAt: t };
      this.pending.set(from, moves);
    }
    moves.to[to] = (moves.to[to] ?? 0) + 1;
    moves.count++;
    moves.lastAt = t;
  }

  private membershipEvent(
    at: number,
    name: string,
    from: string,
    to: string,
    suspectedBy: string[],
    evictedBy: string[] | null,
  ): ActivityEvent {
    switch (to) {
      case 'alive':
        if (from === 'suspected') return { at, kind: 'healed', text: `${name} is reachable again (partition healed)` };
        if (from === 'evicted')
          return { at, kind: 'healed', text: `${name} rejoined after its eviction (partition healed)` };
        return { at, kind: 'member', text: `${name} is a member (alive)` };
      case 'suspected':
        return { at, kind: 'suspected', text: `${name} is suspected: unreachable from ${suspectedBy.join(', ')}` };
      case 'evicted':
        return {
          at,
          kind: 'evicted',
          text: `${name} was evicted${evictedBy && evictedBy.length > 0 ? ` by ${evictedBy.join(', ')}` : ''}: it stops serving; its shards fail over`,
        };
      case 'leaving':
        return { at, kind: 'leave', text: `${name} is leaving: handing its shards over` };
      case 'dead':
        return { at, kind: 'dead', text: `${name} is dead: its lease ran out without a goodbye` };
      default:
        return { at, kind: 'member', text: `${name}: ${from} → ${to}` };
    }
  }
}

function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${ms} ms`;
}
