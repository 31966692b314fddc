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
import { SharedWriter, type WriterPaths, writerPaths } from './sqlite-writer.js';
import type { StoreOptions, WriteRequest } from './types.js';

export interface WorkerInit {
  path: string;
  options: StoreOptions;
  /** Share one writer per file with the other processes (see SharedWriter). */
  sharedWriter: boolean;
}

export interface WorkerRequest {
  id: number;
  /** A core method, or `sharedWriterRole` (answered by the worker: a SharedWriterStatus or null). */
  method: CoreMethod | 'sharedWriterStatus';
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

/** Unsolicited: this worker's role for the file's shared writer (sent at start and when it changes). */
export interface WorkerNotice {
  notice: 'shared-writer';
  role: 'writer' | 'follower';
  paths: WriterPaths;
  strict: boolean;
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
  let shared: SharedWriter | undefined;
  let initError: unknown;
  try {
    core = new SqliteCore(init.path, init.options);
    const paths = init.sharedWriter ? writerPaths(init.path) : null;
    if (paths) {
      const strict = init.options.durability !== 'relaxed';
      const notify = (role: 'writer' | 'follower') =>
        port.postMessage({ notice: 'shared-writer', role, paths, strict } satisfies WorkerNotice);
      shared = new SharedWriter(core, paths, strict, () => notify('writer'));
      notify(shared.status().role);
    }
  } catch (err) {
    core?.close();
    core = undefined;
    initError = err;
  }

  port.on('message', (req: WorkerRequest) => {
    if (shared && req.method === 'write') {
      // Committed with other batches (or forwarded to the file's writer); answered when done.
      shared.write(req.args[0] as WriteRequest[], (result) => {
        port.postMessage(
          result instanceof Error
            ? ({ id: req.id, ok: false, error: toWireError(result) } satisfies WorkerResponse)
            : ({ id: req.id, ok: true, value: result } satisfies WorkerResponse),
        );
      });
      return;
    }
    if (req.method === 'close' && shared) {
      const stopping = shared;
      shared = undefined;
      stopping.stop().then(
        () => closeCore(req),
        () => closeCore(req),
      );
      return;
    }
    // Queued writes of this process go first: requests stay in submission order.
    shared?.flushNow();
    if (req.method === 'close') {
      closeCore(req);
      return;
    }
    let response: WorkerResponse;
    try {
      if (req.method === 'sharedWriterStatus') {
        response = { id: req.id, ok: true, value: shared?.status() ?? null };
      } else {
        if (!core) throw initError ?? new Error('the SQLite store is closed');
        const method = core[req.method] as (...args: unknown[]) => unknown;
        response = { id: req.id, ok: true, value: method.apply(core, req.args) };
      }
    } catch (err) {
      response = { id: req.id, ok: false, error: toWireError(err) };
    }
    port.postMessage(response);
  });

  function closeCore(req: WorkerRequest): void {
    let response: WorkerResponse;
    try {
      core?.close();
      core = undefined;
      response = { id: req.id, ok: true, value: undefined };
    } catch (err) {
      response = { id: req.id, ok: false, error: toWireError(err) };
    }
    port!.postMessage(response);
    // Closing the port empties the worker's event loop, so the thread exits by itself.
    port!.close();
  }
}

serve();
