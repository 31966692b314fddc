import type { HistoryEntry } from '../checker/history.js';

/**
 * The randomized client workload of `concord check`: C closed-loop clients issue reads,
 * writes and If-Match compare-and-sets against random keys on random nodes over HTTP,
 * and record every operation with its invocation and completion time on one clock.
 *
 * Outcome mapping (what the checker may assume):
 * - 200 → ok; 412 → a definite, observed cas failure; 400 → definite failure;
 * - connection refused → definite failure (the request never reached a server);
 * - anything else (timeout, reset, 503, 5xx) → unknown ("info"): it may or may not have happened.
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
}

interface EntityBody {
  state?: unknown;
  version?: unknown;
}

export async function runWorkload(options: WorkloadOptions): Promise<HistoryEntry[]> {
  const history: HistoryEntry[] = [];
  const random = options.random ?? Math.random;
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;

  const client = async (id: number) => {
    const lastSeen = new Map<string, number>();
    while (!options.done()) {
      const key = pick(options.keys);
      const urls = options.urls();
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
      }
      const completedAt = options.clock();
      const base = { key, client: id, op, invokedAt } as const;
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
      } else if ((status === 400 || refused) && op !== 'cas') {
        // Definitely not applied (a refused connection, a rejected body).
        history.push({ ...base, ...writeFields, completedAt, outcome: 'fail' });
      } else if (status === 400 || refused) {
        // Not applied either, but a failed cas means "412: the version differed" to the
        // checker, which this is not: record it as carrying no information instead.
        history.push({ ...base, ...writeFields, completedAt: null, outcome: 'info' });
      } else {
        history.push({ ...base, ...writeFields, completedAt: null, outcome: 'info' });
        // Do not hammer a node that is down or frozen.
        if (status === 0 || status === 503) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      if (op !== 'read' && status !== 200) lastSeen.delete(key);
    }
  };
  await Promise.all(Array.from({ length: options.clients }, (_, i) => client(i + 1)));
  return history;
}

function isConnectionRefused(error: unknown): boolean {
  const cause = (error as { cause?: { code?: string } })?.cause;
  return cause?.code === 'ECONNREFUSED';
}
