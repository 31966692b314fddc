import type { ClusterNode } from './local-cluster.js';

/**
 * HTTP load for cluster tests: closed-loop workers that read and write `/entities/:id` through
 * chosen nodes and record every call (node, id, times, status, error code) on this process's
 * monotonic clock, so that a test can say how available the cluster was in any time window
 * and how long any one entity was unavailable.
 *
 * ```ts
 * const load = startLoad({ nodes: [n1, n2], ids, workers: 4 });
 * // … inject faults …
 * const calls = await load.stop();
 * const share = answeredShare(calls, cutAt, healAt);
 * ```
 */

export interface LoadOptions {
  /** The nodes to send calls to; each worker sticks to one (round robin over the workers). */
  nodes: readonly ClusterNode[];
  /** Entity ids of the entity-state app; each call picks one at random. */
  ids: readonly string[];
  /** Closed-loop workers per node. Default 2. */
  workers?: number;
  /** Share of calls that are writes (PUT); the rest are reads. Default 0.5. */
  writeShare?: number;
  /** Pause between one worker's calls. Default 5 ms. */
  pauseMs?: number;
  /** Client-side timeout of one call. Default 10 s. */
  timeoutMs?: number;
}

export interface LoadCall {
  node: string;
  id: string;
  op: 'get' | 'put';
  /** performance.now() in this process when the call was sent and answered. */
  startedAt: number;
  endedAt: number;
  /** HTTP status; 0 when the request failed without an answer (refused, reset, timed out). */
  status: number;
  /** The `code` of a JSON error answer, when there was one. */
  code?: string;
}

export interface Load {
  /** Calls recorded so far. */
  readonly calls: readonly LoadCall[];
  /** Stop issuing calls, wait for those in flight, and return every call. */
  stop(): Promise<LoadCall[]>;
}

const STATES = ['initialized', 'working', 'finalized'] as const;

export function startLoad(options: LoadOptions): Load {
  const calls: LoadCall[] = [];
  const workers = options.workers ?? 2;
  const writeShare = options.writeShare ?? 0.5;
  const pauseMs = options.pauseMs ?? 5;
  const timeoutMs = options.timeoutMs ?? 10_000;
  let stopping = false;

  const worker = async (node: ClusterNode) => {
    while (!stopping) {
      const id = options.ids[Math.floor(Math.random() * options.ids.length)]!;
      const op = Math.random() < writeShare ? 'put' : 'get';
      const startedAt = performance.now();
      let status = 0;
      let code: string | undefined;
      try {
        const answer =
          op === 'put'
            ? await node.request<{ code?: string }>('PUT', `/entities/${encodeURIComponent(id)}`, {
                body: { state: STATES[Math.floor(Math.random() * STATES.length)] },
                timeoutMs,
              })
            : await node.request<{ code?: string }>('GET', `/entities/${encodeURIComponent(id)}`, { timeoutMs });
        status = answer.status;
        if (status !== 200 && typeof answer.body?.code === 'string') code = answer.body.code;
      } catch {
        status = 0;
      }
      calls.push({ node: node.name, id, op, startedAt, endedAt: performance.now(), status, ...(code ? { code } : {}) });
      if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
    }
  };

  const running = options.nodes.flatMap((node) => Array.from({ length: workers }, () => worker(node)));
  return {
    calls,
    async stop() {
      stopping = true;
      await Promise.all(running);
      return calls;
    },
  };
}

/** Calls sent in [from, to). */
export function callsBetween(calls: readonly LoadCall[], from: number, to: number): LoadCall[] {
  return calls.filter((c) => c.startedAt >= from && c.startedAt < to);
}

/** Share of the calls sent in [from, to) that were answered 200 (1 when there were none). */
export function answeredShare(calls: readonly LoadCall[], from = 0, to = Number.POSITIVE_INFINITY): number {
  const window = callsBetween(calls, from, to);
  return window.length === 0 ? 1 : window.filter((c) => c.status === 200).length / window.length;
}

/**
 * For each entity, the longest time it could not be served in [from, to): from the start of a
 * failed call to the start of the next successful call for that id (or `to`, if none came).
 * Returns the worst entity and its time.
 */
export function longestUnavailable(
  calls: readonly LoadCall[],
  from: number,
  to: number,
): { id: string | null; ms: number } {
  const byId = new Map<string, LoadCall[]>();
  for (const call of callsBetween(calls, from, to)) {
    let list = byId.get(call.id);
    if (!list) {
      list = [];
      byId.set(call.id, list);
    }
    list.push(call);
  }
  let worst: { id: string | null; ms: number } = { id: null, ms: 0 };
  for (const [id, list] of byId) {
    list.sort((a, b) => a.startedAt - b.startedAt);
    let downSince: number | null = null;
    for (const call of list) {
      if (call.status !== 200) {
        downSince ??= call.startedAt;
      } else if (downSince !== null) {
        if (call.startedAt - downSince > worst.ms) worst = { id, ms: call.startedAt - downSince };
        downSince = null;
      }
    }
    if (downSince !== null && to - downSince > worst.ms) worst = { id, ms: to - downSince };
  }
  return worst;
}
