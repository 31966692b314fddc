/**
 * The linearizability search for one key: Wing & Gong's backtracking search
 * with Lowe's memoisation (the algorithm of Porcupine and of Knossos'
 * "linear" checker), specialised to the versioned register.
 *
 * A configuration is (set of operations already linearized, model value).
 * From a configuration the search may linearize any pending operation that is
 * "minimal" — invoked no later than the earliest completion among the
 * completed operations not yet linearized (equal times count as concurrent) —
 * and legal in the model. Operations with an unknown outcome complete at +∞,
 * so they never hold anything back, and they are optional: the search succeeds
 * as soon as every completed operation is linearized.
 *
 * Strategy `plain` is exactly that: depth-first, every configuration cached
 * (bitset of linearized operations + model value, hashed with Zobrist keys).
 * It is exponential in the number of concurrent operations and is kept as the
 * reference the tests compare against.
 *
 * Strategy `pruned` (the default) uses the versions to cut every branch:
 *
 * 1. Structural checks first: two acknowledgements of one version, a read of a
 *    version/state pair no write could have produced, … fail immediately.
 * 2. Read-only operations (reads, 412s) that are minimal and legal are
 *    linearized eagerly: a read of version v can only go while the version is
 *    v, and moving a minimal read earlier never breaks real-time order.
 * 3. After that, any move bumps the version, so the only question is which
 *    write produces version v+1. A write acknowledged as v+1 is the only
 *    candidate (the version is pinned); if it is not minimal, the search is stuck.
 * 4. Otherwise v+1 is a "gap" that an unknown-outcome write must fill. Such
 *    writes never complete, so once minimal they stay minimal: which one fills
 *    a gap does not change what happens to the completed operations. The
 *    path of the completed operations is therefore forced, and what remains
 *    is a matching of gaps to unknown writes, solved exactly and greedily:
 *    - an unknown cas that can apply at v (it can apply nowhere else) is
 *      always the best filler;
 *    - a gap whose state is observed (some read saw (s, v+1)) takes a minimal
 *      unknown write of s — the most recently invoked one, which is the least
 *      useful to anybody else;
 *    - a gap nobody observes takes "some minimal unknown write", decided
 *      later: it becomes a wildcard, and Hall's theorem over the (nested)
 *      candidate sets of the wildcards tells exactly whether they can all
 *      still be served (see `WildcardSlack`).
 *    The state after an unobserved gap is irrelevant and kept as a wildcard.
 *
 * So the pruned search never branches: it is a single pass over the history,
 * O(n log n), and cannot blow up however many unknown outcomes there are.
 * Its verdicts are cross-checked against `plain` and a brute-force oracle in
 * the tests. Both strategies are bounded in time (and `plain` in cache size);
 * exceeding a bound yields `unknown`, never a verdict.
 */

import type { EntityValue } from './history.js';
import {
  type AckOperation,
  type CompletedOperation,
  isCompleted,
  type MaybeWriteOperation,
  type ObserveOperation,
  type Operation,
} from './operations.js';

export type Strategy = 'pruned' | 'plain';

export interface SearchLimits {
  /** `performance.now()` after which the search gives up with `unknown`. */
  readonly deadline: number;
  /** Cache entries after which the search gives up with `unknown`. */
  readonly maxCacheEntries: number;
  readonly strategy: Strategy;
}

/** A contradiction found without searching (each one alone proves non-linearizability). */
export type StructuralProblem =
  | { readonly kind: 'ack-state'; readonly op: AckOperation }
  | { readonly kind: 'cas-version'; readonly op: AckOperation }
  | { readonly kind: 'ack-not-after-initial'; readonly op: AckOperation }
  | { readonly kind: 'duplicate-ack'; readonly first: AckOperation; readonly second: AckOperation }
  | { readonly kind: 'observe-before-initial'; readonly op: ObserveOperation }
  | { readonly kind: 'observe-initial-mismatch'; readonly op: ObserveOperation }
  | { readonly kind: 'observe-ack-mismatch'; readonly op: ObserveOperation; readonly ack: AckOperation }
  | { readonly kind: 'observe-conflict'; readonly first: ObserveOperation; readonly second: ObserveOperation }
  | { readonly kind: 'reject-reports-expected'; readonly op: ObserveOperation }
  | { readonly kind: 'unproducible'; readonly op: ObserveOperation };

/** Where the pruned search got stuck: the first version it could not get past, and why. */
export type StuckReason =
  | {
      /** An observer of `version` started only after `blocker` completed, and `blocker` needs a later version. */
      readonly kind: 'observer-blocked';
      readonly version: number;
      readonly observer: ObserveOperation;
      readonly blocker: CompletedOperation;
    }
  | {
      /** The write acknowledged as `version + 1` started only after `blocker`, which needs a later version, completed. */
      readonly kind: 'write-blocked';
      readonly version: number;
      readonly write: AckOperation;
      readonly blocker: CompletedOperation;
    }
  | {
      /** `version + 1` was observed but no unknown-outcome write of its state was left to produce it in time. */
      readonly kind: 'no-write-for-observed';
      readonly version: number;
      readonly observer: ObserveOperation;
    }
  | {
      /** `waiting` needs the version past `version`, but no write was left to produce `version + 1` in time. */
      readonly kind: 'no-write-for-gap';
      readonly version: number;
      readonly waiting: CompletedOperation | undefined;
    };

export interface SearchStats {
  /** Configurations expanded. */
  nodes: number;
  /** Dead ends hit (including cache hits). */
  backtracks: number;
  cacheEntries: number;
}

export type SearchOutcome =
  | {
      readonly verdict: 'linearizable';
      /** A witness: the linearization, including the unknown-outcome writes it applied. */
      readonly order: readonly Operation[];
      readonly stats: SearchStats;
    }
  | {
      readonly verdict: 'violation';
      readonly problem: StructuralProblem | undefined;
      readonly stuck?: StuckReason;
      readonly stats: SearchStats;
    }
  | { readonly verdict: 'unknown'; readonly reason: 'timeout' | 'memory'; readonly stats: SearchStats };

interface VersionIndex {
  /** The acknowledged write of each version. */
  readonly ackAt: Map<number, AckOperation>;
  /** For each observed version, the observer that completed first. */
  readonly observedAt: Map<number, ObserveOperation>;
}

/** Checks that need no search; returns the version index when none fails. */
export function analyzeStructure(
  operations: readonly Operation[],
  initial: EntityValue,
): { readonly problem: StructuralProblem } | { readonly index: VersionIndex } {
  const ackAt = new Map<number, AckOperation>();
  for (const op of operations) {
    if (op.kind !== 'ack') continue;
    if (op.state !== op.written) return { problem: { kind: 'ack-state', op } };
    if (op.expected !== undefined && op.version !== op.expected + 1) return { problem: { kind: 'cas-version', op } };
    if (op.version <= initial.version) return { problem: { kind: 'ack-not-after-initial', op } };
    const first = ackAt.get(op.version);
    if (first !== undefined) return { problem: { kind: 'duplicate-ack', first, second: op } };
    ackAt.set(op.version, op);
  }
  const observedAt = new Map<number, ObserveOperation>();
  for (const op of operations) {
    if (op.kind !== 'observe') continue;
    if (op.expected !== undefined && op.version === op.expected) {
      return { problem: { kind: 'reject-reports-expected', op } };
    }
    if (op.version < initial.version) return { problem: { kind: 'observe-before-initial', op } };
    if (op.version === initial.version && op.state !== initial.state) {
      return { problem: { kind: 'observe-initial-mismatch', op } };
    }
    const ack = ackAt.get(op.version);
    if (ack !== undefined && ack.state !== op.state) return { problem: { kind: 'observe-ack-mismatch', op, ack } };
    const first = observedAt.get(op.version);
    if (first !== undefined && first.state !== op.state) {
      return { problem: { kind: 'observe-conflict', first, second: op } };
    }
    if (first === undefined || op.completedAt < first.completedAt) observedAt.set(op.version, op);
  }
  // A version nobody acknowledged but somebody observed must come from an
  // unknown-outcome write of that state invoked before the observer completed.
  const earliestWrite = new Map<string, number>();
  const earliestCas = new Map<string, number>();
  for (const op of operations) {
    if (op.kind !== 'maybeWrite' && op.kind !== 'maybeCas') continue;
    const map = op.kind === 'maybeWrite' ? earliestWrite : earliestCas;
    const key = op.kind === 'maybeWrite' ? op.written : `${op.expected}\u0000${op.written}`;
    map.set(key, Math.min(map.get(key) ?? Number.POSITIVE_INFINITY, op.invokedAt));
  }
  for (const [version, observer] of observedAt) {
    if (version === initial.version || ackAt.has(version)) continue;
    const invokedAt = Math.min(
      earliestWrite.get(observer.state) ?? Number.POSITIVE_INFINITY,
      earliestCas.get(`${version - 1}\u0000${observer.state}`) ?? Number.POSITIVE_INFINITY,
    );
    if (!(invokedAt <= observer.completedAt)) return { problem: { kind: 'unproducible', op: observer } };
  }
  return { index: { ackAt, observedAt } };
}

/** Deterministic 32-bit hash keys (splitmix32). */
function zobristKeys(count: number, seed: number): Int32Array {
  const keys = new Int32Array(count);
  let state = seed | 0;
  for (let i = 0; i < count; i++) {
    state = (state + 0x9e3779b9) | 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    keys[i] = z ^ (z >>> 16);
  }
  return keys;
}

interface Frame {
  /** Undo-log length before any alternative of this frame was applied. */
  readonly mark: number;
  readonly version: number;
  readonly state: string | null;
  readonly alternatives: readonly number[];
  next: number;
}

interface CacheEntry {
  readonly bits: Uint32Array;
  readonly version: number;
  readonly state: string | null;
}

function byInvocation(a: Operation, b: Operation): number {
  return a.invokedAt - b.invokedAt || a.id - b.id;
}

/**
 * The deferred wildcards of the pruned search. Wildcard j (in creation order)
 * may take any pooled unknown write invoked at or before `thresholds[j]`;
 * thresholds never decrease, so the candidate sets are nested. By Hall's
 * theorem all wildcards can be served by distinct writes iff, for every j,
 * slack[j] = (pooled writes invoked ≤ thresholds[j]) − (j + 1) ≥ 0.
 * A segment tree keeps the slacks under suffix decrements and minimum queries.
 */
class WildcardSlack {
  readonly thresholds: number[] = [];
  private readonly size: number;
  private readonly min: Float64Array;
  private readonly lazy: Float64Array;

  constructor(capacity: number) {
    let size = 1;
    while (size < capacity) size *= 2;
    this.size = size;
    this.min = new Float64Array(2 * size).fill(Number.POSITIVE_INFINITY);
    this.lazy = new Float64Array(2 * size);
  }

  get count(): number {
    return this.thresholds.length;
  }

  /** Adds a wildcard whose candidates are the `pooled` writes currently pooled. False if Hall fails. */
  add(threshold: number, pooled: number): boolean {
    const slack = pooled - (this.count + 1);
    if (slack < 0) return false;
    this.set(this.count, slack, 1, 0, this.size - 1);
    this.thresholds.push(threshold);
    return true;
  }

  /**
   * Withdraws one pooled write invoked at `invokedAt` (a specific gap needs
   * it). False, with nothing changed, if the wildcards could then no longer be served.
   */
  withdraw(invokedAt: number): boolean {
    // Wildcards with thresholds >= invokedAt (a suffix) counted this write.
    let low = 0;
    let high = this.count;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.thresholds[middle]! >= invokedAt) high = middle;
      else low = middle + 1;
    }
    if (low === this.count) return true;
    if (this.query(low, this.count - 1, 1, 0, this.size - 1) < 1) return false;
    this.add_(low, this.count - 1, -1, 1, 0, this.size - 1);
    return true;
  }

  private push(node: number): void {
    const pending = this.lazy[node]!;
    if (pending === 0) return;
    for (const child of [2 * node, 2 * node + 1]) {
      this.min[child]! += pending;
      this.lazy[child]! += pending;
    }
    this.lazy[node] = 0;
  }

  private set(position: number, value: number, node: number, low: number, high: number): void {
    if (low === high) {
      this.min[node] = value;
      return;
    }
    this.push(node);
    const middle = (low + high) >>> 1;
    if (position <= middle) this.set(position, value, 2 * node, low, middle);
    else this.set(position, value, 2 * node + 1, middle + 1, high);
    this.min[node] = Math.min(this.min[2 * node]!, this.min[2 * node + 1]!);
  }

  private add_(from: number, to: number, delta: number, node: number, low: number, high: number): void {
    if (to < low || high < from) return;
    if (from <= low && high <= to) {
      this.min[node]! += delta;
      this.lazy[node]! += delta;
      return;
    }
    this.push(node);
    const middle = (low + high) >>> 1;
    this.add_(from, to, delta, 2 * node, low, middle);
    this.add_(from, to, delta, 2 * node + 1, middle + 1, high);
    this.min[node] = Math.min(this.min[2 * node]!, this.min[2 * node + 1]!);
  }

  private query(from: number, to: number, node: number, low: number, high: number): number {
    if (to < low || high < from) return Number.POSITIVE_INFINITY;
    if (from <= low && high <= to) return this.min[node]!;
    this.push(node);
    const middle = (low + high) >>> 1;
    return Math.min(this.query(from, to, 2 * node, low, middle), this.query(from, to, 2 * node + 1, middle + 1, high));
  }
}

class KeySearch {
  private readonly n: number;
  private readonly done: Uint8Array;
  private readonly stats: SearchStats = { nodes: 0, backtracks: 0, cacheEntries: 0 };
  private version: number;
  private state: string | null;

  /** Completed operations by completion time; `returnCursor` is the first not yet linearized. */
  private readonly byCompletion: Int32Array;
  private readonly completionRank: Int32Array;
  private returnCursor = 0;
  private remaining = 0;

  /** The operations linearized (or applied) on the current path, in order (the undo log). */
  private readonly log: Int32Array;
  private logLength = 0;

  constructor(
    private readonly ops: readonly Operation[],
    initial: EntityValue,
    private readonly limits: SearchLimits,
  ) {
    const n = ops.length;
    this.n = n;
    this.version = initial.version;
    this.state = initial.state;
    this.done = new Uint8Array(n);
    this.log = new Int32Array(n);
    const completed = ops.filter(isCompleted).sort((a, b) => a.completedAt - b.completedAt || a.id - b.id);
    this.byCompletion = Int32Array.from(completed, (op) => op.id);
    this.completionRank = new Int32Array(n).fill(-1);
    completed.forEach((op, rank) => {
      this.completionRank[op.id] = rank;
    });
    this.remaining = completed.length;
  }

  /** Earliest completion among the completed operations not yet linearized. */
  private minReturn(): number {
    const { byCompletion, done } = this;
    while (this.returnCursor < byCompletion.length && done[byCompletion[this.returnCursor]!] !== 0) {
      this.returnCursor++;
    }
    const id = byCompletion[this.returnCursor];
    return id === undefined ? Number.POSITIVE_INFINITY : this.ops[id]!.completedAt;
  }

  private markDone(id: number): void {
    this.done[id] = 1;
    if (this.completionRank[id]! >= 0) this.remaining--;
    this.log[this.logLength++] = id;
  }

  private undoTo(mark: number): void {
    while (this.logLength > mark) {
      const id = this.log[--this.logLength]!;
      this.done[id] = 0;
      const rank = this.completionRank[id]!;
      if (rank >= 0) {
        this.remaining++;
        if (rank < this.returnCursor) this.returnCursor = rank;
      }
    }
  }

  private timedOut(): boolean {
    return (this.stats.nodes & 255) === 0 && performance.now() > this.limits.deadline;
  }

  // ---- plain strategy: Wing & Gong + Lowe ------------------------------------------------

  runPlain(): SearchOutcome {
    const { n, ops } = this;
    const byInvocationIds = Int32Array.from([...ops].sort(byInvocation), (op) => op.id);
    const bits = new Uint32Array((n + 31) >>> 5);
    const zobristLow = zobristKeys(n, 0x2545f491);
    const zobristHigh = zobristKeys(n, 0x6c8e9cf5);
    const cache = new Map<number, CacheEntry[]>();
    const frames: Frame[] = [];
    let hashLow = 0;
    let hashHigh = 0;
    const toggle = (id: number): void => {
      bits[id >>> 5]! ^= 1 << (id & 31);
      hashLow ^= zobristLow[id]!;
      hashHigh ^= zobristHigh[id]!;
    };
    /** Lowe's cache: has this (linearized set, model value) been expanded before? Records it if not. */
    const seenBefore = (): boolean | 'full' => {
      const key = ((hashLow ^ Math.imul(this.version | 0, 0x9e3779b1)) >>> 0) * 0x200000 + (hashHigh & 0x1fffff);
      const entries = cache.get(key);
      for (const entry of entries ?? []) {
        if (entry.version === this.version && entry.state === this.state && entry.bits.every((w, i) => w === bits[i])) {
          return true;
        }
      }
      if (this.stats.cacheEntries >= this.limits.maxCacheEntries) return 'full';
      const entry: CacheEntry = { bits: bits.slice(), version: this.version, state: this.state };
      if (entries === undefined) cache.set(key, [entry]);
      else entries.push(entry);
      this.stats.cacheEntries++;
      return false;
    };

    for (;;) {
      this.stats.nodes++;
      if (this.timedOut()) return { verdict: 'unknown', reason: 'timeout', stats: this.stats };
      if (this.remaining === 0) return this.success(this.log.subarray(0, this.logLength));
      const seen = seenBefore();
      if (seen === 'full') return { verdict: 'unknown', reason: 'memory', stats: this.stats };
      const alternatives = seen ? [] : this.plainAlternatives(byInvocationIds);
      if (alternatives.length > 0) {
        frames.push({ mark: this.logLength, version: this.version, state: this.state, alternatives, next: 0 });
      } else {
        this.stats.backtracks++;
      }
      // Take the next untried alternative of the innermost frame that has one.
      let top = frames[frames.length - 1];
      while (top !== undefined && top.next >= top.alternatives.length) {
        frames.pop();
        top = frames[frames.length - 1];
      }
      if (top === undefined) return { verdict: 'violation', problem: undefined, stats: this.stats };
      while (this.logLength > top.mark) {
        toggle(this.log[this.logLength - 1]!);
        this.undoTo(this.logLength - 1);
      }
      this.version = top.version;
      this.state = top.state;
      const id = top.alternatives[top.next++]!;
      const op = ops[id]!;
      toggle(id);
      this.markDone(id);
      if (op.kind === 'ack') {
        this.version = op.version;
        this.state = op.state;
      } else if (op.kind === 'maybeWrite' || op.kind === 'maybeCas') {
        this.version += 1;
        this.state = op.written;
      }
    }
  }

  /** Every minimal pending operation that is legal now. */
  private plainAlternatives(byInvocationIds: Int32Array): number[] {
    const minReturn = this.minReturn();
    const alternatives: number[] = [];
    const { version, state } = this;
    for (const id of byInvocationIds) {
      const op = this.ops[id]!;
      if (op.invokedAt > minReturn) break;
      if (this.done[id] !== 0) continue;
      let legal: boolean;
      switch (op.kind) {
        case 'observe':
          legal = op.version === version && op.state === state && op.expected !== version;
          break;
        case 'reject':
          legal = op.expected !== version;
          break;
        case 'ack':
          legal =
            op.version === version + 1 &&
            op.state === op.written &&
            (op.expected === undefined || op.expected === version);
          break;
        case 'maybeWrite':
          legal = true;
          break;
        case 'maybeCas':
          legal = op.expected === version;
          break;
      }
      if (legal) alternatives.push(id);
    }
    return alternatives;
  }

  // ---- pruned strategy: a single forced path ---------------------------------------------

  runPruned(index: VersionIndex): SearchOutcome {
    const { ops } = this;
    const sorted = [...ops].sort(byInvocation);
    // Pending read-only operations in invocation order: observers per version, and 412s.
    const observersAt = new Map<number, number[]>();
    const rejects: number[] = [];
    const maybeCasAt = new Map<number, number[]>();
    const maybeWrites: MaybeWriteOperation[] = [];
    for (const op of sorted) {
      if (op.kind === 'observe') {
        const list = observersAt.get(op.version);
        if (list === undefined) observersAt.set(op.version, [op.id]);
        else list.push(op.id);
      } else if (op.kind === 'reject') rejects.push(op.id);
      else if (op.kind === 'maybeCas') {
        const list = maybeCasAt.get(op.expected);
        if (list === undefined) maybeCasAt.set(op.expected, [op.id]);
        else list.push(op.id);
      } else if (op.kind === 'maybeWrite') maybeWrites.push(op);
    }
    let observerCursor = 0;
    let observerVersion = this.version;

    // The pool: minimal unknown writes not claimed by an observed gap, per state, in invocation order.
    const pool = new Map<string, number[]>();
    let pooled = 0;
    let released = 0;
    const wildcards = new WildcardSlack(Math.max(1, maybeWrites.length));
    const stuck = (reason: StuckReason): SearchOutcome => {
      this.stats.backtracks++;
      return { verdict: 'violation', problem: undefined, stuck: reason, stats: this.stats };
    };
    /** The pending completed operation that completed first: whatever is not minimal waits for it. */
    const blocker = (): CompletedOperation | undefined => {
      this.minReturn();
      const id = this.byCompletion[this.returnCursor];
      return id === undefined ? undefined : (ops[id] as CompletedOperation);
    };

    for (;;) {
      this.stats.nodes++;
      if (this.timedOut()) return { verdict: 'unknown', reason: 'timeout', stats: this.stats };

      // Read-only operations that are minimal and legal, until none is left (point 2).
      let progressed = true;
      while (progressed) {
        progressed = false;
        if (observerVersion !== this.version) {
          observerVersion = this.version;
          observerCursor = 0;
        }
        const observers = observersAt.get(this.version) ?? [];
        while (observerCursor < observers.length && ops[observers[observerCursor]!]!.invokedAt <= this.minReturn()) {
          this.markDone(observers[observerCursor++]!);
          progressed = true;
        }
        for (let i = 0; i < rejects.length; i++) {
          const id = rejects[i]!;
          const op = ops[id]!;
          if (op.invokedAt > this.minReturn()) break;
          if (op.kind === 'reject' && op.expected !== this.version) {
            this.markDone(id);
            rejects.splice(i--, 1);
            progressed = true;
          }
        }
      }
      if (this.remaining === 0) return this.success(this.assignWildcards(pool));
      // Observers of this version that could not go now never can: every move bumps the version.
      const waitingObserver = observersAt.get(this.version)?.[observerCursor];
      if (waitingObserver !== undefined) {
        const observer = ops[waitingObserver] as ObserveOperation;
        return stuck({ kind: 'observer-blocked', version: this.version, observer, blocker: blocker()! });
      }

      const minReturn = this.minReturn();
      const target = this.version + 1;
      const ack = index.ackAt.get(target);
      if (ack !== undefined) {
        if (ack.invokedAt > minReturn) {
          return stuck({ kind: 'write-blocked', version: this.version, write: ack, blocker: blocker()! });
        }
        this.markDone(ack.id);
        this.version = target;
        this.state = ack.state;
        continue;
      }

      // A gap (point 4).
      while (released < maybeWrites.length && maybeWrites[released]!.invokedAt <= minReturn) {
        const op = maybeWrites[released++]!;
        const list = pool.get(op.written);
        if (list === undefined) pool.set(op.written, [op.id]);
        else list.push(op.id);
        pooled++;
      }
      const observed = index.observedAt.get(target)?.state;
      const casList = maybeCasAt.get(this.version) ?? [];
      const cas = casList.find((id) => {
        const op = ops[id]!;
        return (
          op.invokedAt <= minReturn && (observed === undefined || (op.kind === 'maybeCas' && op.written === observed))
        );
      });
      if (cas !== undefined) {
        this.markDone(cas);
      } else if (observed !== undefined) {
        const candidates = pool.get(observed);
        const latest = candidates?.[candidates.length - 1];
        if (latest === undefined || !wildcards.withdraw(ops[latest]!.invokedAt)) {
          return stuck({
            kind: 'no-write-for-observed',
            version: this.version,
            observer: index.observedAt.get(target)!,
          });
        }
        candidates!.pop();
        pooled--;
        this.markDone(latest);
      } else {
        if (!wildcards.add(minReturn, pooled)) {
          return stuck({ kind: 'no-write-for-gap', version: this.version, waiting: blocker() });
        }
        this.log[this.logLength++] = -wildcards.count; // placeholder, resolved on success
      }
      this.version = target;
      this.state = observed ?? null;
    }
  }

  /** Serves the wildcards (in order) with the earliest pooled writes: Hall guarantees it works. */
  private assignWildcards(pool: Map<string, number[]>): number[] {
    const leftovers = [...pool.values()].flat().sort((a, b) => byInvocation(this.ops[a]!, this.ops[b]!));
    return Array.from(this.log.subarray(0, this.logLength), (id) => (id >= 0 ? id : leftovers[-id - 1]!));
  }

  private success(order: ArrayLike<number>): SearchOutcome {
    return { verdict: 'linearizable', order: Array.from(order, (id) => this.ops[id]!), stats: this.stats };
  }
}

/** Searches for a linearization of one key's operations (ids must be 0..n-1). */
export function searchLinearization(
  operations: readonly Operation[],
  initial: EntityValue,
  limits: SearchLimits,
): SearchOutcome {
  const search = new KeySearch(operations, initial, limits);
  if (limits.strategy === 'plain') return search.runPlain();
  const analysis = analyzeStructure(operations, initial);
  if ('problem' in analysis) {
    return { verdict: 'violation', problem: analysis.problem, stats: { nodes: 0, backtracks: 0, cacheEntries: 0 } };
  }
  return search.runPruned(analysis.index);
}
