/**
 * # concord linearizability checker
 *
 * Judges whether a history recorded by test clients against a concord cluster
 * (under kills, pauses and partitions) is linearizable.
 *
 * ## Model
 * Every key is an independent register holding `{ state, version }`, initially
 * `{ state: 'initialized', version: 0 }` (configurable per key):
 *
 * - `read` returns the current value;
 * - `write(state)` sets the state and bumps the version by exactly one;
 * - `cas(state, expectedVersion)` does the same only if the version equals
 *   `expectedVersion`; a 412 (`outcome: 'fail'`) is a definite non-application
 *   and an observation that the version differed at that moment;
 * - an `info` write/cas (timeout, 503, connection error) may have taken effect
 *   at any point after its invocation, or never; `info` reads and non-412
 *   failures are ignored.
 *
 * ## Usage
 * ```ts
 * const result = checkHistory(history, { timeoutMs: 5_000 });
 * if (result.ok !== true) console.log(formatReport(result));
 * ```
 * `ok` is `true` (proved linearizable), `false` (proved not) or `'unknown'`
 * (a key's search hit its time or memory bound — never reported as a pass).
 *
 * ## How
 * 1. Validate the history (`validateHistory`), split it per key
 *    (linearizability is compositional).
 * 2. Per key, Wing & Gong's search with Lowe's memoisation — the algorithm of
 *    Porcupine and Knossos' "linear" — with the versions used to prune it: a
 *    write acknowledged as version v goes exactly when the model is at v-1,
 *    reads pin the version, minimal read-only operations go eagerly, and
 *    unknown-outcome writes only fill versions nobody acknowledged, assigned
 *    by an exact greedy matching. The pruned search never needs to backtrack:
 *    one O(n log n) pass per key however many clients or unknown outcomes.
 *    The unpruned search (`strategy: 'plain'`) is kept as a reference.
 *    See `search.ts`.
 * 3. For a failing key, shrink the history with delta debugging to a minimal
 *    witness (`shrink.ts`) and explain it in plain English (`explain.ts`).
 *    Operations left out of the witness are weakened, not deleted (reads
 *    dropped, acknowledged writes become "may have happened"), so the
 *    witness is a genuine proof and fails on its own too.
 * 4. `formatReport` prints per-key verdicts and witness tables (`report.ts`).
 *
 * `simulateHistory` generates linearizable histories from a sequential
 * register with random concurrency, for testing checkers and harnesses.
 */

import { type IndexedEntry, partitionByKey } from './decompose.js';
import { explainViolation } from './explain.js';
import { assertValidHistory, type EntityValue, type History, type HistoryEntry } from './history.js';
import { type CompletedOperation, isCompleted, toOperations } from './operations.js';
import { type SearchStats, type Strategy, searchLinearization } from './search.js';
import { checkWeakened, shrinkFailure } from './shrink.js';

export { type IndexedEntry, partitionByKey } from './decompose.js';
export { describeOperation } from './explain.js';
export {
  assertValidHistory,
  type ClientId,
  type EntityValue,
  type History,
  type HistoryEntry,
  InvalidHistoryError,
  type OperationName,
  type Outcome,
  type ValidationProblem,
  validateEntry,
  validateHistory,
} from './history.js';
export { formatHistoryTable, formatReport, type ReportOptions } from './report.js';
export type { SearchStats, Strategy } from './search.js';
export { createRandom, type SimulatedHistory, type SimulationOptions, simulateHistory } from './simulate.js';

export const DEFAULT_INITIAL_VALUE: EntityValue = Object.freeze({ state: 'initialized', version: 0 });

export interface CheckOptions {
  /** The value every key starts with (default `{ state: 'initialized', version: 0 }`). */
  readonly initialValue?: EntityValue | ((key: string) => EntityValue);
  /** Search budget per key; past it the key is `unknown` (default 10 000 ms). */
  readonly timeoutMs?: number;
  /** Memory bound for the search cache per key (default 256 MiB; only the `plain` strategy caches). */
  readonly maxCacheBytes?: number;
  /** Shrink failing keys to a minimal witness (default true). */
  readonly shrink?: boolean;
  /** Shrinking budget per failing key (default 5 000 ms). */
  readonly shrinkTimeoutMs?: number;
  /** `pruned` (default) or `plain` (reference Wing & Gong search; exponential, for cross-checking). */
  readonly strategy?: Strategy;
}

export type Verdict = boolean | 'unknown';

export interface KeyFailure {
  /** The failing sub-history, in invocation order. */
  readonly minimalHistory: HistoryEntry[];
  /** Positions of `minimalHistory`'s entries in the full history. */
  readonly historyIndices: number[];
  readonly explanation: string;
  /** Whether the key's history was shrunk at all (`options.shrink`). */
  readonly shrunk: boolean;
  /** Whether shrinking reached a 1-minimal sub-history within its budget. */
  readonly minimal: boolean;
}

export interface KeyCheckResult {
  readonly key: string;
  readonly ok: Verdict;
  /** Entries recorded for the key (including ones that carry no information). */
  readonly operations: number;
  /** Of those, the operations whose outcome is unknown (`info`: they may or may not have taken effect). */
  readonly unknownOutcomes: number;
  readonly elapsedMs: number;
  readonly failure?: KeyFailure;
  /** Why the verdict is `unknown`. */
  readonly unknownReason?: string;
  readonly stats: SearchStats;
}

export interface CheckResult {
  readonly ok: Verdict;
  readonly keys: KeyCheckResult[];
  readonly elapsedMs: number;
}

const MIB = 1024 * 1024;

function initialValueFor(key: string, options: CheckOptions): EntityValue {
  const initial = options.initialValue;
  if (initial === undefined) return DEFAULT_INITIAL_VALUE;
  return typeof initial === 'function' ? initial(key) : initial;
}

function toFailure(
  kept: readonly CompletedOperation[],
  explanation: string,
  shrunk: boolean,
  minimal: boolean,
): KeyFailure {
  const sorted = [...kept].sort((a, b) => a.invokedAt - b.invokedAt || a.index - b.index);
  return {
    minimalHistory: sorted.map((op) => op.entry),
    historyIndices: sorted.map((op) => op.index),
    explanation,
    shrunk,
    minimal,
  };
}

/** Checks the entries of one key (all entries must have that key). */
export function checkKey(key: string, entries: readonly IndexedEntry[], options: CheckOptions = {}): KeyCheckResult {
  const start = performance.now();
  const operations = toOperations(entries);
  const initial = initialValueFor(key, options);
  const timeoutMs = options.timeoutMs ?? 10_000;
  // A cache entry holds a bitset of all operations plus some overhead.
  const entryBytes = Math.ceil(operations.length / 8) + 96;
  const maxCacheEntries = Math.max(1, Math.floor((options.maxCacheBytes ?? 256 * MIB) / entryBytes));
  const outcome = searchLinearization(operations, initial, {
    deadline: start + timeoutMs,
    maxCacheEntries,
    strategy: options.strategy ?? 'pruned',
  });
  const base = {
    key,
    operations: entries.length,
    unknownOutcomes: entries.filter((e) => e.entry.outcome === 'info').length,
    stats: outcome.stats,
  };

  if (outcome.verdict === 'linearizable') {
    return { ...base, ok: true, elapsedMs: performance.now() - start };
  }
  if (outcome.verdict === 'unknown') {
    const unknownReason =
      outcome.reason === 'timeout'
        ? `search timed out after ${timeoutMs} ms (${outcome.stats.nodes} configurations explored)`
        : `search cache reached its bound of ${maxCacheEntries} entries`;
    return { ...base, ok: 'unknown', unknownReason, elapsedMs: performance.now() - start };
  }

  let failure: KeyFailure;
  if (options.shrink === false) {
    const kept = operations.filter(isCompleted);
    const explanation = explainViolation(kept, operations, initial, outcome.problem, outcome.stuck);
    failure = toFailure(kept, explanation, false, false);
  } else {
    const shrinkOptions = { deadline: performance.now() + (options.shrinkTimeoutMs ?? 5_000), maxCacheEntries };
    const shrunk = shrinkFailure(operations, initial, outcome.problem, shrinkOptions);
    // Re-check the witness to learn its structural problem (if any) for the explanation.
    const keep = new Set(shrunk.kept.map((op) => op.id));
    const witness = checkWeakened(operations, keep, initial, { ...shrinkOptions, deadline: Number.POSITIVE_INFINITY });
    const [problem, stuck] = witness.verdict === 'violation' ? [witness.problem, witness.stuck] : [];
    const explanation = explainViolation(shrunk.kept, operations, initial, problem, stuck);
    failure = toFailure(shrunk.kept, explanation, true, shrunk.minimal);
  }
  return { ...base, ok: false, failure, elapsedMs: performance.now() - start };
}

/** Checks a whole history, key by key. Throws `InvalidHistoryError` when the history is malformed. */
export function checkHistory(history: History, options: CheckOptions = {}): CheckResult {
  const start = performance.now();
  assertValidHistory(history);
  const keys: KeyCheckResult[] = [];
  for (const [key, entries] of partitionByKey(history)) keys.push(checkKey(key, entries, options));
  const ok: Verdict = keys.some((key) => key.ok === false)
    ? false
    : keys.some((key) => key.ok === 'unknown')
      ? 'unknown'
      : true;
  return { ok, keys, elapsedMs: performance.now() - start };
}
