/** Reconnect delays: exponential from `baseMs`, capped at `capMs`, with jitter so that many nodes
 * that lost the same peer do not all re-dial in the same instant. */
export interface BackoffPolicy {
  baseMs: number;
  capMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 50, capMs: 1000 };

/** Delay before retry number `attempt` (0 = first retry): uniformly in [d/2, d] for d = min(cap, base·2^attempt). */
export function backoffDelay(policy: BackoffPolicy, attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
