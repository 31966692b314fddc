/**
 * Worker-thread entry point of SqliteStore. It owns one SqliteCore (one connection) and answers
 * requests strictly in arrival order: messages are handled one at a time and every core call is
 * synchronous, so a request never starts before the previous one has finished.
 *
 * The main thread imports this file for its types only.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ConcordError } from '../errors.js';
import { type CoreMethod, SqliteCore } from './sqlite-core.js';
import type { StoreOptions } from './types.js';

export interface WorkerInit {
  path: string;
  options: StoreOptions;
}

export interface WorkerRequest {
  id: number;
  method: CoreMethod;
  args: unknown[];
}

/** An error flattened for postMessage (structured clone would drop `code` and the class). */
export interface WireError {
  name: string;
  message: string;
  code: string | undefined;
  /** True when the error was a ConcordError (then `code` is a ConcordErrorCode). */
  concord: boolean;
  details: Record<string, unknown> | undefined;
  stack: string | undefined;
}

export type WorkerResponse = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: WireError };

function toWireError(err: unknown): WireError {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return {
      name: err.name,
      message: err.message,
      code: typeof code === 'string' ? code : undefined,
      concord: err instanceof ConcordError,
      details: err instanceof ConcordError ? err.details : undefined,
      stack: err.stack,
    };
  }
  return { name: 'Error', message: String(err), code: undefined, concord: false, details: undefined, stack: undefined };
}

function serve(): void {
  const port = parentPort;
  if (!port) throw new Error('sqlite-worker.js must be started as a worker thread by SqliteStore');
  const init = workerData as WorkerInit;

  let core: SqliteCore | undefined;
  let initError: unknown;
  try {
    core = new SqliteCore(init.path, init.options);
  } catch (err) {
    initError = err;
  }

  port.on('message', (req: WorkerRequest) => {
    let response: WorkerResponse;
    try {
      if (req.method === 'close') {
        core?.close();
        core = undefined;
        response = { id: req.id, ok: true, value: undefined };
      } else {
        if (!core) throw initError ?? new Error('the SQLite store is closed');
        const method = core[req.method] as (...args: unknown[]) => unknown;
        response = { id: req.id, ok: true, value: method.apply(core, req.args) };
      }
    } catch (err) {
      response = { id: req.id, ok: false, error: toWireError(err) };
    }
    port.postMessage(response);
    // Closing the port empties the worker's event loop, so the thread exits by itself.
    if (req.method === 'close') port.close();
  });
}

serve();
