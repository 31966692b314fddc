import type { HistoryEntry } from '../checker/history.js';

/**
 * The randomized client workload of `concord check`: C closed-loop clients issue reads,
 * writes and If-Match compare-and-sets against random keys on random nodes over HTTP,
 * and record every operation with its invocation and completion time on one clock.
 *
 * Like clients behind a load balancer, they send only to the nodes whose `/readyz` answered
 * 200 at the last health check (every 100 ms), and to any node when none is ready.
 *
 * Outcome mapping (what the checker may assume):
 * - 200 → ok; 412 → a definite, observed cas failure; 400 → definite failure;
 * - 503 with `maybeApplied: false` → definite failure: the node says it was certainly not applied
 *   (the checker holds it to that: a write answered so that took effect is a violation);
 * - connection refused → definite failure (the request never reached a server);
 * - anything else (timeout, reset, 504, other 5xx) → unknown ("info"): it may or may not have happened.
 * A cas that definitely failed without a 412 carries no information (to the checker a failed cas
 * means "the version differed"), so it is recorded as unknown.
 */

export const STATES = ['initialized', 'working', 'finalized'] as const;

export interface WorkloadOptions {
  urls: () => string[];
  keys: string[];
  clients: number;
  /** Client-side timeout of one operation. */
  opTimeoutMs: number;
  /** Stop issuing new operations when this returns true. */
  done: () => boolean;
  /** Clock shared with the fault schedule. */
  clock: () => number;
  random?: () => number;
  /** Send only to nodes whose /readyz answered 200 at the last check (default true). */
  readyOnly?: boolean;
}

interface EntityBody {
  state?: unknown;
  version?: unknown;
  maybeApplied?: unknown;
}

/** Polls /readyz of every node every 100 ms, like a load balancer's health check. */
function healthChecker(
  urls: () => string[],
  done: () => boolean,
): { ready: (all: string[]) => string[]; stopped: Promise<void> } {
  const ready = new Map<string, boolean>();
  const stopped = (async () => {
    while (!done()) {
      await Promise.all(
        urls().map(async (url) => {
          try {
            const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(500) });
            await response.arrayBuffer();
            ready.set(url, response.status === 200);
          } catch {
            ready.set(url, false);
          }
        }),
      );
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  return {
    ready: (all) => {
      const healthy = all.filter((url) => ready.get(url) !== false);
      return healthy.length > 0 ? healthy : all;
    },
    stopped,
  };
}

export async function runWorkload(options: WorkloadOptions): Promise<HistoryEntry[]> {
  const history: HistoryEntry[] = [];
  const random = options.random ?? Math.random;
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const health = options.readyOnly === false ? null : healthChecker(options.urls, options.done);

  const client = async (id: number) => {
    const lastSeen = new Map<string, number>();
    while (!options.done()) {
      const key = pick(options.keys);
      const urls = health ? health.ready(options.urls()) : options.urls();
      if (urls.length === 0) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        continue;
      }
      const url = pick(urls);
      const roll = random();
      const op = roll < 0.4 ? 'read' : roll < 0.8 ? 'write' : 'cas';
      const value = pick(STATES);
      const expectedVersion = lastSeen.get(key) ?? 0;
      const invokedAt = options.clock();
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (op === 'cas') headers['if-match'] = `"${expectedVersion}"`;
      let status = 0;
      let body: EntityBody = {};
      let refused = false;
      let failure = '';
      try {
        const response = await fetch(`${url}/entities/${encodeURIComponent(key)}`, {
          method: op === 'read' ? 'GET' : 'PUT',
          headers,
          body: op === 'read' ? undefined : JSON.stringify({ state: value }),
          signal: AbortSignal.timeout(options.opTimeoutMs),
        });
        status = response.status;
        body = (await response.json().catch(() => ({}))) as EntityBody;
      } catch (error) {
        refused = isConnectionRefused(error);
        failure = describeFailure(error);
      }
      const completedAt = options.clock();
      const base = { key, client: id, op, invokedAt, status: status === 0 ? failure : status } as const;
      const writeFields = op === 'read' ? {} : { value, ...(op === 'cas' ? { expectedVersion } : {}) };
      if (status === 200 && typeof body.state === 'string' && typeof body.version === 'number') {
        lastSeen.set(key, body.version);
        history.push({
          ...base,
          ...writeFields,
          completedAt,
          outcome: 'ok',
          result: { state: body.state, version: body.version },
        });
      } else if (status === 412 && op === 'cas') {
        history.push({ ...base, ...writeFields, completedAt, outcome: 'fail' });
        if (typeof (body as { version?: unknown }).version === 'number') lastSeen.set(key, body.version as number);
      } else if ((status === 400 || refused || notApplied(status, body)) && op !== 'cas') {
        // Definitely not applied (a refused connection, a rejected body, a 503 saying so).
        history.push({ ...base, ...writeFields, completedAt, outcome: 'fail' });
      } else if (status === 400 || refused || notApplied(status, body)) {
        // Not applied either, but a failed cas means "412: the version differed" to the
        // checker, which this is not: record it as carrying no information instead.
        history.push({ ...base, ...writeFields, completedAt: null, answeredAt: completedAt, outcome: 'info' });
      } else {
        history.push({ ...base, ...writeFields, completedAt: null, answeredAt: completedAt, outcome: 'info' });
        // Do not hammer a node that is down or frozen.
        if (status === 0 || status === 503) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      if (op !== 'read' && status !== 200) lastSeen.delete(key);
    }
  };
  await Promise.all(Array.from({ length: options.clients }, (_, i) => client(i + 1)));
  await health?.stopped;
  return history;
}

/** A 503 whose body says the call was certainly not applied (the HTTP API's contract). */
function notApplied(status: number, body: EntityBody): boolean {
  return status === 503 && body.maybeApplied === false;
}

/** What became of a request that got no HTTP answer, in a few words. */
function describeFailure(error: unknown): string {
  if ((error as { name?: string })?.name === 'TimeoutError') return 'timeout';
  const code = (error as { cause?: { code?: string } })?.cause?.code;
  if (code === 'ECONNREFUSED') return 'connection refused';
  if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET') return 'connection reset';
  return code ?? 'no answer';
}

function isConnectionRefused(error: unknown): boolean {
  const cause = (error as { cause?: { code?: string } })?.cause;
  return cause?.code === 'ECONNREFUSED';
}
