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

/**
 * Load the way clients behind a load balancer make it: many concurrent callers over keep-alive
 * connections to every node, each call sent to a node whose `/readyz` answered 200 at its last
 * look (polled every `readinessIntervalMs`), and retried — on another ready node — when it was
 * certainly not applied: a 503 (`maybeApplied: false`), or a connection refused. Anything else
 * that is not a 2xx or 4xx answer (a 504, a 500, a connection dropped after the request was
 * sent) ends the call as failed. For rolling restarts: `failed(calls)` must stay empty.
 */
export interface BalancedLoadOptions {
  nodes: readonly ClusterNode[];
  /** Entity ids of the entity-state app; each call picks one at random. */
  ids: readonly string[];
  /** Concurrent callers (closed loop). Default 32. */
  callers?: number;
  /** Share of calls that are writes (PUT); the rest are reads. Default 0.5. */
  writeShare?: number;
  /** Pause between one caller's calls. Default 2 ms. */
  pauseMs?: number;
  /** How often each node's readiness is looked at. Default 100 ms. */
  readinessIntervalMs?: number;
  /** A call is retried (503, refused connection) for at most this long. Default 10 s. */
  retryForMs?: number;
  /** Client-side timeout of one attempt. Default 10 s. */
  timeoutMs?: number;
}

export interface BalancedCall {
  id: string;
  op: 'get' | 'put';
  /** performance.now() when the call began and ended (retries included). */
  startedAt: number;
  endedAt: number;
  attempts: number;
  /** The final status: 0 when the last attempt had no answer. */
  status: number;
  /** Why it failed (the last attempt's error or JSON `code`), when it did. */
  error?: string;
  /** The last attempt's JSON `error` message, when it failed with one. */
  detail?: string;
  /** The nodes tried, in order. */
  nodes: string[];
}

export interface BalancedLoad {
  readonly calls: readonly BalancedCall[];
  stop(): Promise<BalancedCall[]>;
}

export function startBalancedLoad(options: BalancedLoadOptions): BalancedLoad {
  const calls: BalancedCall[] = [];
  const callers = options.callers ?? 32;
  const writeShare = options.writeShare ?? 0.5;
  const pauseMs = options.pauseMs ?? 2;
  const readinessIntervalMs = options.readinessIntervalMs ?? 100;
  const retryForMs = options.retryForMs ?? 10_000;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const ready = new Set<ClusterNode>(options.nodes);
  let stopping = false;

  const watch = async (node: ClusterNode) => {
    while (!stopping) {
      let ok = false;
      try {
        const response = await fetch(`${node.url}/readyz`, { signal: AbortSignal.timeout(500) });
        await response.arrayBuffer();
        ok = response.status === 200;
      } catch {
        ok = false;
      }
      if (ok) ready.add(node);
      else ready.delete(node);
      await sleep(readinessIntervalMs);
    }
  };

  const pick = async (avoid: ClusterNode | null): Promise<ClusterNode> => {
    for (;;) {
      const candidates = [...ready].filter((n) => n !== avoid);
      const pool = candidates.length > 0 ? candidates : [...ready];
      if (pool.length > 0) return pool[Math.floor(Math.random() * pool.length)]!;
      await sleep(10);
    }
  };

  const one = async (): Promise<BalancedCall> => {
    const id = options.ids[Math.floor(Math.random() * options.ids.length)]!;
    const op = Math.random() < writeShare ? 'put' : 'get';
    const startedAt = performance.now();
    const call: BalancedCall = { id, op, startedAt, endedAt: startedAt, attempts: 0, status: 0, nodes: [] };
    let last: ClusterNode | null = null;
    for (;;) {
      const node = await pick(last);
      last = node;
      call.attempts++;
      call.nodes.push(node.name);
      let retry = false;
      try {
        const path = `/entities/${encodeURIComponent(id)}`;
        const answer =
          op === 'put'
            ? await node.request<{ code?: string; error?: string; maybeApplied?: boolean }>('PUT', path, {
                body: { state: STATES[Math.floor(Math.random() * STATES.length)] },
                timeoutMs,
              })
            : await node.request<{ code?: string; error?: string; maybeApplied?: boolean }>('GET', path, { timeoutMs });
        call.status = answer.status;
        delete call.error;
        delete call.detail;
        if (answer.status >= 500) {
          call.error = typeof answer.body?.code === 'string' ? answer.body.code : 'error';
          if (typeof answer.body?.error === 'string') call.detail = answer.body.error;
        }
        if (answer.status === 503 && answer.body?.maybeApplied !== true) {
          ready.delete(node);
          retry = true;
        }
      } catch (error) {
        call.status = 0;
        call.error = describeFetchError(error);
        // Refused: nothing was sent, so nothing was applied. Anything else may have reached it.
        if (call.error === 'ECONNREFUSED') {
          ready.delete(node);
          retry = true;
        }
      }
      if (!retry || performance.now() - startedAt > retryForMs) break;
      await sleep(20);
    }
    call.endedAt = performance.now();
    return call;
  };

  const watchers = options.nodes.map((node) => watch(node));
  const loops = Array.from({ length: callers }, async () => {
    while (!stopping) {
      calls.push(await one());
      if (pauseMs > 0) await sleep(pauseMs);
    }
  });
  return {
    calls,
    async stop() {
      stopping = true;
      await Promise.all([...loops, ...watchers]);
      return calls;
    },
  };
}

/** The calls that did not end with a 2xx or 4xx answer. */
export function failedCalls(calls: readonly BalancedCall[]): BalancedCall[] {
  return calls.filter((c) => c.status < 200 || c.status >= 500);
}

function describeFetchError(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } } | null)?.cause;
  if (cause?.code) return cause.code;
  if (error instanceof Error && error.name === 'TimeoutError') return 'TIMEOUT';
  return cause?.message ?? (error instanceof Error ? error.message : String(error));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
