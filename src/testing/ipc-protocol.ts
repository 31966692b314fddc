/** Messages between a test (or benchmark) process and a node process it forked. */

export interface IpcNodeConfig {
  name: string;
  store: string;
  secret: string;
  leaseTtlMs?: number;
  callTimeoutMs?: number;
  shardCount?: number;
  idleTimeoutMs?: number;
  maxActiveEntities?: number;
  durability?: 'strict' | 'relaxed';
  faultInjection?: boolean;
}

export type IpcRequest =
  | { id: number; op: 'call'; kind: string; entityId: string; handler: string; message?: unknown; timeoutMs?: number }
  | { id: number; op: 'status' }
  | { id: number; op: 'faults'; dropTo?: string[]; allow?: string[] | 'all'; cutStore?: boolean }
  | { id: number; op: 'stop' }
  | {
      id: number;
      op: 'load';
      kind: string;
      ids: string[];
      /** Share of calls that are writes (0..1). */
      writeRatio: number;
      concurrency: number;
      durationMs: number;
      warmupMs?: number;
    };

export type IpcEvent =
  | { type: 'ready'; name: string; incarnation: number | null; pid: number }
  | { type: 'start-failed'; error: { code: string; message: string } };

export type IpcResponse =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: { code: string; name: string; message: string } };

export interface LoadResult {
  ops: number;
  errors: number;
  durationMs: number;
  /** Latencies in microseconds. */
  p50: number;
  p90: number;
  p99: number;
  max: number;
  cpuUserMs: number;
  cpuSystemMs: number;
}
