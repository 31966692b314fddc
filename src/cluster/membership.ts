import { EventEmitter } from 'node:events';
import type { Logger } from '../logger.js';
import type { NodeList, NodeRecord, NodeStatus, Store, SuspectRef } from '../store/types.js';
import { currentSuspicions, decideEvictions, liveMembers } from './eviction.js';
import type { Lease } from './lease.js';

/**
 * Membership under partial failure: who this node can reach, what it records in the store
 * when it cannot reach a member, the evictions it applies, and its own way in (`joining` →
 * `alive`) and back in after an eviction.
 *
 * - **Suspecting.** A member this node has not heard from for `suspicionTimeoutMs` (no open
 *   connection, and nothing received since then) is a candidate. Before recording it, the node
 *   asks up to three members it can reach whether *they* can reach it (an indirect probe). If
 *   none can (or there is nobody to ask), the suspicion is recorded at once; if one can, the
 *   fault is in this node's own link, so it waits one more suspicion timeout first: a link
 *   that flaps, or heals, never gets that far. The node's suspicions are reported to the store
 *   (Store.reportSuspicions) whenever they change, and refreshed while they last.
 * - **Deciding.** Every view of the membership table the node reads (its own reports, the
 *   shard manager's periodic reads) is run through the eviction rule (eviction.ts); each
 *   decision is applied with a compare-and-set on the membership version, so concurrent
 *   deciders cannot both act on different pictures.
 * - **Being evicted.** The node learns it from a refused renewal or from a view: it stops
 *   serving at once, drops every shard, acknowledges in the store (its lease then ends, and
 *   its shards may be claimed), and registers again as `joining` (the runtime does this part:
 *   see ConcordNode).
 * - **Joining.** A `joining` node becomes `alive` (a shard owner) only once it has an open
 *   connection to every live member, so a node that cannot reach the cluster never takes
 *   shards that the others could not reach — this is also how an evicted node comes back
 *   once its network heals.
 */

/**
 * How long after a node is cut off from the others (and only from them: the store is still
 * reachable) its entities are served again by the others, at most, with the default timings:
 * its connections are called silent and suspicion recorded after the suspicion timeout
 * (counted from the last bytes heard), the decision is one store transaction, the evicted node
 * learns of it at its next report or renewal (a sixth of a lease) and acknowledges, and the
 * others read the acknowledgement (they look every 100 ms while an eviction is pending) and
 * claim. One lease on top of the suspicion timeout covers those steps with room to spare.
 */
export function detectionBoundMs(options: { leaseTtlMs: number; suspicionTimeoutMs?: number }): number {
  return (options.suspicionTimeoutMs ?? options.leaseTtlMs) + options.leaseTtlMs;
}

/** What membership needs from the peer transport. */
export interface MembershipPeers {
  isConnected(peer: string): boolean;
  /** performance.now() of the last bytes received from `peer` (kept after a disconnect), or null. */
  lastHeardAt(peer: string): number | null;
  /** Ask `via` whether it can reach `target` now. */
  probe(via: string, target: string, timeoutMs: number): Promise<boolean>;
}

export interface MembershipOptions {
  self: string;
  /** A member unreachable this long is suspected (after an indirect probe). */
  suspicionTimeoutMs: number;
  /** See EvictionRuleOptions.stableAfterMs. */
  stableAfterMs: number;
  /** See EvictionRuleOptions.staleAfterMs. */
  staleAfterMs: number;
  /** Suspicions are re-reported (refreshed) this often while they last. */
  reportIntervalMs: number;
  /** How often reachability is looked at. */
  tickMs: number;
  probeTimeoutMs: number;
  /** A probed peer counts as reachable if the helper heard from it within this long. */
  probeFreshMs: number;
  /** Calls for an owner unreachable at least this long fail fast (see unreachableOwner). */
  failFastAfterMs: number;
  /** The membership lease's ttl (for estimates of when a shard moves). */
  leaseTtlMs: number;
}

export type MemberDisplayStatus = 'alive' | 'joining' | 'leaving' | 'suspected' | 'evicted' | 'dead';

export interface MemberState {
  status: MemberDisplayStatus;
  /** Members that currently report this one unreachable (this node included). */
  suspectedBy: string[];
  /** For an evicted name: the reporters that backed the eviction. */
  evictedBy: string[] | null;
}

export interface MembershipStats {
  suspicionsRaised: number;
  suspicionsCleared: number;
  probes: number;
  evictionsDecided: number;
  evictedSelf: number;
  joins: number;
}

export interface MembershipEvents {
  /** This incarnation was evicted (seen in a view of the membership table). */
  'self-evicted': [incarnation: number, by: string[]];
  /** This node became `alive`: it may own shards now. */
  joined: [incarnation: number];
  /** This node evicted `name`; tell the peers and look at the shard table again. */
  'member-evicted': [name: string, reporters: string[]];
  /** A fresh read of the membership would help (an evicted member's lease is about to end). */
  refresh: [];
}

interface ProbeState {
  incarnation: number;
  /** 'pending' while asking; then whether some helper could reach it ('none': nobody to ask). */
  result: 'pending' | 'reachable' | 'unreachable' | 'none';
}

/** What membership needs from the membership table's writer. */
type MembershipStore = Pick<Store, 'reportSuspicions' | 'evictMember' | 'setNodeStatus'>;

export class Membership extends EventEmitter<MembershipEvents> {
  readonly stats: MembershipStats = {
    suspicionsRaised: 0,
    suspicionsCleared: 0,
    probes: 0,
    evictionsDecided: 0,
    evictedSelf: 0,
    joins: 0,
  };
  private view: NodeList | null = null;
  private viewReadAt = 0;
  /** When each member (name@incarnation) entered this node's view: reachability counts from there. */
  private readonly knownSince = new Map<string, number>();
  private readonly probes = new Map<string, ProbeState>();
  /** The suspicions this node holds now (name → incarnation). */
  private suspects = new Map<string, number>();
  private reported: string | null = null;
  private lastReportAt = 0;
  private reporting: Promise<void> | null = null;
  private deciding: Promise<void> | null = null;
  private promoting: Promise<void> | null = null;
  private readonly attempted = new Set<string>();
  private evictedIncarnation: number | null = null;
  private lastWaitLogAt = 0;
  /**
   * When this process last came back from a stall (a GC pause, SIGSTOP, a blocked event loop):
   * nothing could be heard from anyone while it was stalled, so unreachability counts from here.
   */
  private resumedAt = 0;
  /** The incarnation the reachability clock was last reset for (see countFrom). */
  private clockIncarnation: number | null = null;
  private lastTickAt = performance.now();
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    private readonly store: MembershipStore,
    private readonly lease: Lease,
    private readonly peers: MembershipPeers,
    private readonly options: MembershipOptions,
    private readonly logger: Logger,
  ) {
    super();
  }

  start(): void {
    if (this.timer || this.stopped) return;
    this.timer = setInterval(() => this.tick(), this.options.tickMs);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** This node's status in the latest view (null before the first view, or when not registered). */
  selfStatus(): NodeStatus | null {
    const row = this.selfRow();
    return row?.status ?? null;
  }

  /** Is this node a member (`alive`) by the latest view? */
  get isMember(): boolean {
    return this.selfStatus() === 'alive';
  }

  /**
   * Whether the node should get traffic: it is a member, and it reaches a majority of the
   * members (itself included); exactly half counts when that half holds the oldest member, the
   * same tie-break the eviction rule uses.
   */
  readiness(): { ready: boolean; reason?: string } {
    const status = this.selfStatus();
    if (status === null) return { ready: false, reason: 'not registered in the membership table yet' };
    if (status === 'evicted' || (status === 'joining' && this.selfRow()?.evictedAt != null)) {
      return { ready: false, reason: 'evicted by the other members; rejoins once it can reach them' };
    }
    if (status === 'joining') return { ready: false, reason: 'joining: not yet connected to every member' };
    if (status === 'leaving') return { ready: false, reason: 'leaving the cluster' };
    const members = this.view ? liveMembers(this.view) : [];
    if (members.length <= 1) return { ready: true };
    const reachable = members.filter((m) => m.name === this.options.self || this.peers.isConnected(m.name));
    const oldest = [...members].sort((a, b) => a.incarnation - b.incarnation || (a.name < b.name ? -1 : 1))[0]!;
    const majority =
      reachable.length * 2 > members.length ||
      (reachable.length * 2 === members.length && reachable.some((m) => m.name === oldest.name));
    if (majority) return { ready: true };
    return {
      ready: false,
      reason: `reaches ${reachable.length} of ${members.length} members, not a majority`,
    };
  }

  /** Every row of the latest view with its display status. */
  memberStates(): Map<string, MemberState> {
    const result = new Map<string, MemberState>();
    const view = this.view;
    if (!view) return result;
    const now = this.storeNow();
    const reported = currentSuspicions(view, this.options.staleAfterMs);
    for (const row of view.nodes) {
      const suspectedBy = [...reported].filter(([, s]) => s.has(row.name)).map(([name]) => name);
      const ownSuspicion = this.isMember && this.suspects.get(row.name) === row.incarnation;
      if (ownSuspicion && !suspectedBy.includes(this.options.self)) {
        suspectedBy.push(this.options.self);
      }
      result.set(row.name, {
        status: displayStatus(row, now, suspectedBy.length > 0),
        suspectedBy: suspectedBy.sort(),
        evictedBy: row.evictedBy,
      });
    }
    return result;
  }

  /**
   * Is `owner` known to be unreachable from here, so that a call for one of its entities
   * should fail at once rather than wait out its deadline? Null when it is connected, when
   * it was lost only a moment ago (a reconnect is likely), when it is leaving (its shards are
   * being handed over) or when its shards are about to move anyway (lease over or ending
   * within `soonMs`). Otherwise: when its shards are expected to be served again.
   */
  unreachableOwner(owner: string, soonMs: number): { retryAfterMs: number } | null {
    if (this.peers.isConnected(owner)) return null;
    const row = this.view?.nodes.find((n) => n.name === owner);
    if (!row) return null;
    const leaseLeft = row.leaseExpiresAt - this.storeNow();
    if (leaseLeft <= soonMs || row.status === 'leaving') return null;
    if (row.status === 'evicted') {
      // It acknowledges at its next report or renewal; at worst its lease runs out.
      const expected = Math.min(leaseLeft, this.options.leaseTtlMs / 3);
      return expected <= soonMs ? null : { retryAfterMs: expected };
    }
    const unreachableFor = this.unreachableFor(row);
    if (unreachableFor < this.options.failFastAfterMs) return null;
    // A live lease that keeps being renewed (a partition) ends by eviction: suspicion, then
    // the decision, then the suspect's acknowledgement. A dead owner's lease just runs out.
    const linkOnly = this.probes.get(owner)?.result === 'reachable' ? this.options.suspicionTimeoutMs : 0;
    const toEviction =
      Math.max(0, this.options.suspicionTimeoutMs - unreachableFor) + linkOnly + this.options.leaseTtlMs / 3;
    return { retryAfterMs: Math.max(1, Math.round(Math.min(leaseLeft, toEviction))) };
  }

  /** Answer a peer's indirect probe: can this node reach `target` right now? */
  canReach(target: string): boolean {
    if (!this.peers.isConnected(target)) return false;
    const heard = this.peers.lastHeardAt(target);
    return heard !== null && performance.now() - heard < this.options.probeFreshMs;
  }

  /** A fresh read of the membership table (from the shard manager's reads and from reports). */
  onView(view: NodeList): void {
    if (this.stopped) return;
    if (this.view && view.version < this.view.version) return; // an older read finished late
    this.view = view;
    this.viewReadAt = performance.now();
    const t = performance.now();
    const present = new Set<string>();
    for (const member of liveMembers(view)) {
      const key = `${member.name}@${member.incarnation}`;
      present.add(key);
      if (!this.knownSince.has(key)) this.knownSince.set(key, t);
    }
    for (const key of this.knownSince.keys()) if (!present.has(key)) this.knownSince.delete(key);

    const self = this.selfRow();
    const incarnation = this.lease.incarnation;
    if (self && incarnation !== null && self.incarnation === incarnation && self.status === 'evicted') {
      this.onSelfEvicted(incarnation, self.evictedBy ?? []);
      return;
    }
    if (self?.status === 'alive' && incarnation !== null && self.incarnation === incarnation) this.decide(view);
  }

  // ---- internals ------------------------------------------------------------------------

  private tick(): void {
    const t = performance.now();
    // Back from a stall: give the connections (and, if the lease ran out meanwhile, the new
    // incarnation's) a third of a lease to come back before counting anyone unreachable.
    if (t - this.lastTickAt > 3 * this.options.tickMs) this.resumedAt = t + this.options.leaseTtlMs / 3;
    this.lastTickAt = t;
    if (this.stopped || !this.view) return;
    const incarnation = this.lease.incarnation;
    if (incarnation === null || !this.lease.valid()) return;
    const status = this.selfStatus();
    if (status === 'joining') {
      this.tryPromote(incarnation);
      return;
    }
    if (status !== 'alive') return;
    this.updateSuspicions();
    const key = suspectKey(this.suspects);
    const due = this.suspects.size > 0 && performance.now() - this.lastReportAt >= this.options.reportIntervalMs;
    if (key !== this.reported || due) this.report(incarnation);
    // An evicted member's lease is about to end (or be acknowledged): look again soon.
    const now = this.storeNow();
    if (this.view.nodes.some((n) => n.status === 'evicted' && n.leaseExpiresAt > now - 50)) this.emit('refresh');
  }

  private updateSuspicions(): void {
    const view = this.view!;
    const self = this.options.self;
    const members = liveMembers(view).filter((m) => m.name !== self);
    const next = new Map<string, number>();
    for (const member of members) {
      if (this.peers.isConnected(member.name)) {
        this.probes.delete(member.name);
        continue;
      }
      const unreachableFor = this.unreachableFor(member);
      if (unreachableFor < this.options.suspicionTimeoutMs) continue;
      let probe = this.probes.get(member.name);
      if (!probe || probe.incarnation !== member.incarnation) {
        probe = { incarnation: member.incarnation, result: 'pending' };
        this.probes.set(member.name, probe);
        this.runProbe(member.name, probe, members);
        continue;
      }
      if (probe.result === 'pending') continue;
      // Others reach it: the fault is this node's own link. Give it one more timeout.
      if (probe.result === 'reachable' && unreachableFor < 2 * this.options.suspicionTimeoutMs) continue;
      next.set(member.name, member.incarnation);
    }
    for (const name of this.probes.keys()) if (!members.some((m) => m.name === name)) this.probes.delete(name);
    for (const [name, incarnation] of next) {
      if (this.suspects.get(name) !== incarnation) {
        this.stats.suspicionsRaised++;
        const probe = this.probes.get(name)?.result;
        this.logger.warn(
          {
            peer: name,
            incarnation,
            unreachableMs: Math.round(this.unreachableFor(members.find((m) => m.name === name)!)),
            probe,
          },
          'member unreachable: suspicion recorded',
        );
      }
    }
    for (const [name] of this.suspects) {
      if (!next.has(name)) {
        this.stats.suspicionsCleared++;
        this.logger.info({ peer: name }, 'member reachable again (or gone): suspicion withdrawn');
      }
    }
    this.suspects = next;
  }

  private runProbe(target: string, probe: ProbeState, members: NodeRecord[]): void {
    const helpers = members
      .filter((m) => m.name !== target && this.peers.isConnected(m.name))
      .map((m) => m.name)
      .sort(() => Math.random() - 0.5)
      .slice(0, 3);
    if (helpers.length === 0) {
      probe.result = 'none';
      return;
    }
    this.stats.probes++;
    void Promise.allSettled(helpers.map((via) => this.peers.probe(via, target, this.options.probeTimeoutMs))).then(
      (answers) => {
        const reached = answers.some((a) => a.status === 'fulfilled' && a.value === true);
        const answered = answers.some((a) => a.status === 'fulfilled');
        probe.result = reached ? 'reachable' : answered ? 'unreachable' : 'none';
        this.logger.info({ peer: target, helpers, result: probe.result }, 'indirect probe');
      },
    );
  }

  private report(incarnation: number): void {
    if (this.reporting) return;
    const suspects: SuspectRef[] = [...this.suspects].map(([name, inc]) => ({ name, incarnation: inc }));
    const key = suspectKey(this.suspects);
    this.reporting = this.store
      .reportSuspicions(this.options.self, incarnation, suspects)
      .then((view) => {
        this.reported = key;
        this.lastReportAt = performance.now();
        this.onView(view);
      })
      .catch((error: unknown) => this.logger.debug({ err: String(error) }, 'reporting suspicions failed'))
      .finally(() => {
        this.reporting = null;
      });
  }

  private decide(view: NodeList): void {
    if (this.deciding) return;
    const decisions = decideEvictions(view, {
      stableAfterMs: this.options.stableAfterMs,
      staleAfterMs: this.options.staleAfterMs,
    });
    const todo = decisions.filter((d) => !this.attempted.has(`${d.name}@${d.incarnation}#${view.version}`));
    if (todo.length === 0) return;
    const incarnation = this.lease.incarnation!;
    this.deciding = (async () => {
      for (const decision of todo) {
        this.attempted.add(`${decision.name}@${decision.incarnation}#${view.version}`);
        let applied = false;
        try {
          applied = await this.store.evictMember({
            suspect: decision.name,
            suspectIncarnation: decision.incarnation,
            by: this.options.self,
            byIncarnation: incarnation,
            reporters: decision.reporters,
            expectedVersion: view.version,
          });
        } catch (error) {
          this.logger.debug({ err: String(error) }, 'eviction failed');
        }
        if (!applied) {
          // Someone else changed the membership first: decide again on a fresh view.
          this.emit('refresh');
          return;
        }
        this.stats.evictionsDecided++;
        this.logger.warn(
          {
            evicted: decision.name,
            incarnation: decision.incarnation,
            reporters: decision.reporters,
            rule: decision.reason,
          },
          'member evicted: the members that can reach each other ended its membership',
        );
        this.emit('member-evicted', decision.name, decision.reporters);
        // The version moved with this eviction: the next decision needs a fresh view.
        return;
      }
    })().finally(() => {
      this.deciding = null;
      if (this.attempted.size > 1000) this.attempted.clear();
    });
  }

  private onSelfEvicted(incarnation: number, by: string[]): void {
    if (this.evictedIncarnation === incarnation) return;
    this.evicted(incarnation);
    this.emit('self-evicted', incarnation, by);
  }

  /**
   * This incarnation was evicted (however the node learnt it): forget its suspicions, which
   * the store dropped with the eviction; the next incarnation starts afresh.
   */
  evicted(incarnation: number): void {
    if (this.evictedIncarnation === incarnation) return;
    this.evictedIncarnation = incarnation;
    this.stats.evictedSelf++;
    this.suspects.clear();
    this.probes.clear();
    this.reported = null;
  }

  private tryPromote(incarnation: number): void {
    if (this.promoting) return;
    const members = liveMembers(this.view!).filter((m) => m.name !== this.options.self);
    const missing = members.filter((m) => !this.peers.isConnected(m.name)).map((m) => m.name);
    if (missing.length > 0) {
      const t = performance.now();
      if (t - this.lastWaitLogAt > 5000) {
        this.lastWaitLogAt = t;
        this.logger.info({ missing }, 'joining: waiting until every member is reachable');
      }
      return;
    }
    this.promoting = this.store
      .setNodeStatus(this.options.self, incarnation, 'alive', ['joining'])
      .then((promoted) => {
        if (!promoted || this.lease.incarnation !== incarnation) return;
        const row = this.selfRow();
        if (row && row.incarnation === incarnation) row.status = 'alive';
        this.stats.joins++;
        this.logger.info({ incarnation, members: members.length + 1 }, 'joined: member of the cluster');
        this.emit('joined', incarnation);
      })
      .catch((error: unknown) => this.logger.debug({ err: String(error) }, 'promotion to member failed'))
      .finally(() => {
        this.promoting = null;
      });
  }

  private selfRow(): NodeRecord | undefined {
    const incarnation = this.lease.incarnation;
    const row = this.view?.nodes.find((n) => n.name === this.options.self);
    if (!row) return undefined;
    // After a rejoin the view may still show the previous incarnation for a moment.
    if (incarnation !== null && row.incarnation < incarnation) return undefined;
    return row;
  }

  private unreachableFor(member: NodeRecord): number {
    const t = performance.now();
    // A stall of our own that the tick has not seen yet (it is the first thing to run after one).
    if (t - this.lastTickAt > 3 * this.options.tickMs) return 0;
    const since = this.knownSince.get(`${member.name}@${member.incarnation}`) ?? t;
    const heard = this.peers.lastHeardAt(member.name) ?? Number.NEGATIVE_INFINITY;
    return t - Math.max(since, heard, this.countFrom());
  }

  /**
   * Unreachability is counted from after our own interruptions: a stall (nothing could be
   * heard meanwhile), and a new incarnation of our own (every connection is re-made, and the
   * peers learn the new incarnation only at their next read of the membership table: allow
   * half a lease for that).
   */
  private countFrom(): number {
    const incarnation = this.lease.incarnation;
    if (incarnation !== null && incarnation !== this.clockIncarnation) {
      const first = this.clockIncarnation === null;
      this.clockIncarnation = incarnation;
      if (!first) this.resumedAt = Math.max(this.resumedAt, performance.now() + this.options.leaseTtlMs / 2);
    }
    return this.resumedAt;
  }

  /** The store's clock now, estimated from the latest view. */
  private storeNow(): number {
    if (!this.view) return 0;
    return this.view.now + (performance.now() - this.viewReadAt);
  }
}

function suspectKey(suspects: Map<string, number>): string {
  return [...suspects]
    .map(([name, incarnation]) => `${name}@${incarnation}`)
    .sort()
    .join(',');
}

function displayStatus(row: NodeRecord, storeNow: number, suspected: boolean): MemberDisplayStatus {
  if (row.leaseExpiresAt <= storeNow) return 'dead';
  switch (row.status) {
    case 'leaving':
      return 'leaving';
    case 'evicted':
      return 'evicted';
    case 'joining':
      return row.evictedAt !== null ? 'evicted' : 'joining';
    default:
      return suspected ? 'suspected' : 'alive';
  }
}
