/**
 * Seeds and run counts of the property-based ("fuzz") suites, shared so that one seed replays a
 * whole run.
 *
 * - `CONCORD_FUZZ_SEED`: the seed (default: a fresh one per run, printed at the start). A failing
 *   property prints fast-check's counterexample with its `seed` and `path`; rerun with
 *   `CONCORD_FUZZ_SEED=<seed>` to get the same inputs again.
 * - `CONCORD_FUZZ_RUNS`: how many generated inputs all suites together try (default 100,000 —
 *   what CI runs). The longer documented run: `CONCORD_FUZZ_RUNS=1000000 npx vitest run test/fuzz`.
 *
 * Each suite takes a fixed share of the total (`runsFor(share)`); the shares add up to 1 across
 * the transport suites (the HTTP fuzz suite against a real node has its own, smaller count).
 */
import type { Parameters } from 'fast-check';

function parseSeed(text: string | undefined): number {
  if (text !== undefined && text.trim() !== '') {
    const seed = Number(text);
    if (!Number.isSafeInteger(seed)) throw new Error(`CONCORD_FUZZ_SEED must be an integer, got ${text}`);
    return seed | 0;
  }
  return (Date.now() ^ Math.floor(Math.random() * 0x7fffffff)) | 0;
}

export const FUZZ_SEED = parseSeed(process.env['CONCORD_FUZZ_SEED']);
export const FUZZ_TOTAL_RUNS = Math.max(1, Number(process.env['CONCORD_FUZZ_RUNS'] ?? 100_000) || 100_000);

/** Number of runs for a property that takes `share` of the total. */
export function runsFor(share: number): number {
  return Math.max(1, Math.round(FUZZ_TOTAL_RUNS * share));
}

/** fast-check parameters: the run's seed, `numRuns`, and a note on how to replay. */
export function params<T>(numRuns: number): Parameters<T> {
  return { seed: FUZZ_SEED, numRuns };
}

/** Runs counted by the suites of this process, for the summary line. */
export const counted = { runs: 0 };

export function announce(suite: string): void {
  // One line per suite, so that a CI log always shows the seed, failed or not.
  process.stdout.write(`[fuzz] ${suite}: seed ${FUZZ_SEED} (replay: CONCORD_FUZZ_SEED=${FUZZ_SEED})\n`);
}
