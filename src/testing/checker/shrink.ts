/**
 * Shrinking a failing key history to a small witness with delta debugging
 * (Zeller's ddmin), deterministic for a given input.
 *
 * The candidate witnesses are subsets of the completed operations. A subset
 * "still fails" when the key's history with every other operation weakened
 * (observations dropped, acknowledged writes turned into maybe-writes; see
 * `weaken`) is not linearizable. Weakening only adds linearizations, so the
 * subset proves the full history wrong without relying on anything left out,
 * and the subset checked alone fails as well. Dropping operations outright
 * would not do: without its writes, almost any read "fails" for the
 * uninteresting reason that nothing wrote the version it saw.
 *
 * The result is 1-minimal (removing any single operation makes it pass) unless
 * the time budget ran out first, in which case it is the smallest failing
 * subset found so far.
 */

import type { EntityValue } from './history.js';
import { type CompletedOperation, isCompleted, type Operation, weaken } from './operations.js';
import { type SearchOutcome, type StructuralProblem, searchLinearization } from './search.js';

export interface ShrinkOptions {
  /** `performance.now()` after which shrinking stops with the best subset so far. */
  readonly deadline: number;
  readonly maxCacheEntries: number;
}

export interface ShrinkResult {
  /** The failing subset (operations of the input, in invocation order). */
  readonly kept: readonly CompletedOperation[];
  /** True when the subset is 1-minimal; false when the time budget ran out first. */
  readonly minimal: boolean;
  /** How many candidate subsets were checked. */
  readonly checks: number;
}

/** The operations a structural problem names: a good first guess at the witness. */
export function problemOperations(problem: StructuralProblem): CompletedOperation[] {
  switch (problem.kind) {
    case 'duplicate-ack':
    case 'observe-conflict':
      return [problem.first, problem.second];
    case 'observe-ack-mismatch':
      return [problem.ack, problem.op];
    default:
      return [problem.op];
  }
}

export function checkWeakened(
  operations: readonly Operation[],
  keep: ReadonlySet<number>,
  initial: EntityValue,
  options: ShrinkOptions,
): SearchOutcome {
  return searchLinearization(weaken(operations, keep), initial, {
    deadline: options.deadline,
    maxCacheEntries: options.maxCacheEntries,
    strategy: 'pruned',
  });
}

function split<T>(items: readonly T[], parts: number): T[][] {
  const chunks: T[][] = [];
  let start = 0;
  for (let i = 0; i < parts; i++) {
    const end = start + Math.floor((items.length - start) / (parts - i));
    chunks.push(items.slice(start, end));
    start = end;
  }
  return chunks;
}

/**
 * Shrinks the completed operations of a non-linearizable key history.
 * `problem` (from the original search), when given, seeds the search.
 */
export function shrinkFailure(
  operations: readonly Operation[],
  initial: EntityValue,
  problem: StructuralProblem | undefined,
  options: ShrinkOptions,
): ShrinkResult {
  let checks = 0;
  // Any inconclusive check (time ran out) voids the 1-minimality claim.
  let inconclusive = false;
  const outOfTime = (): boolean => performance.now() > options.deadline;
  const fails = (subset: readonly CompletedOperation[]): boolean => {
    checks++;
    const keep = new Set(subset.map((op) => op.id));
    const verdict = checkWeakened(operations, keep, initial, options).verdict;
    if (verdict === 'unknown') inconclusive = true;
    return verdict === 'violation';
  };
  const byInvocation = (a: Operation, b: Operation): number => a.invokedAt - b.invokedAt || a.id - b.id;

  let current = operations.filter(isCompleted).sort(byInvocation);
  if (problem !== undefined) {
    const seed = problemOperations(problem).sort(byInvocation);
    if (fails(seed)) current = seed;
  }

  let parts = 2;
  while (current.length >= 2) {
    if (outOfTime()) return { kept: current, minimal: false, checks };
    const chunks = split(current, parts);
    let reduced = false;
    // With two parts, each subset is the other's complement: only test complements.
    if (parts > 2) {
      for (const chunk of chunks) {
        if (fails(chunk)) {
          current = chunk;
          parts = 2;
          reduced = true;
          break;
        }
      }
    }
    if (!reduced) {
      for (let i = 0; i < chunks.length; i++) {
        const complement = chunks.filter((_, j) => j !== i).flat();
        if (fails(complement)) {
          current = complement;
          parts = Math.max(parts - 1, 2);
          reduced = true;
          break;
        }
        if (outOfTime()) return { kept: current, minimal: false, checks };
      }
    }
    if (!reduced) {
      if (parts >= current.length) break;
      parts = Math.min(parts * 2, current.length);
    }
  }
  return { kept: current, minimal: !inconclusive, checks };
}
