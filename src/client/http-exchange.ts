import { StringDecoder } from 'node:string_decoder';
import type { Dispatcher } from 'undici';

/**
 * One HTTP request and its whole answer, through undici's dispatch API, given up after a wait.
 *
 * Why not `pool.request({ signal })`: per call that made an AbortSignal with its own timer and
 * listeners, and a body stream to read the answer from, which together cost about as much CPU
 * as the rest of the request. undici's own header and body timeouts are no substitute: they
 * run on a coarse clock (about half a second) and do not cover the wait for a connection. Here
 * a plain timer bounds the whole exchange, and the answer's bytes are collected as they come.
 */

export interface HttpAnswer {
  status: number;
  /** The value of the header asked for (`headerName`), when the answer has it once. */
  header: string | undefined;
  /** The body, as UTF-8 text. */
  text: string;
}

/** The exchange was given up because its wait ran out (it may or may not have reached the server). */
export class ExchangeTimeout extends Error {
  readonly code = 'CLIENT_DEADLINE';
  constructor(waitMs: number) {
    super(`no answer within ${waitMs} ms`);
    this.name = 'ExchangeTimeout';
  }
}

/**
 * `onLine`: a 200 answer's body is newline-delimited (NDJSON): each complete line is handed
 * over as it arrives (an unterminated last line too, at the end), and `text` is then empty.
 */
export function exchange(
  dispatcher: Dispatcher,
  request: Dispatcher.DispatchOptions,
  waitMs: number,
  headerName: string,
  onLine?: (line: string) => void,
): Promise<HttpAnswer> {
  return new Promise<HttpAnswer>((resolve, reject) => {
    let controller: Dispatcher.DispatchController | null = null;
    let done = false;
    let status = 0;
    let header: string | undefined;
    const chunks: Buffer[] = [];
    /** Lines mode: the bytes after the last newline seen. */
    let partial = '';
    let lines = false;
    // A character split between two chunks is kept until its last byte arrives.
    let decoder: StringDecoder | undefined;
    const finish = (error: Error | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (error !== null) {
        reject(error);
        return;
      }
      if (lines) {
        const rest = partial + (decoder?.end() ?? '');
        if (rest.length > 0) onLine!(rest);
      }
      const text =
        chunks.length === 0 ? '' : chunks.length === 1 ? chunks[0]!.toString() : Buffer.concat(chunks).toString();
      resolve({ status, header, text });
    };
    const timer = setTimeout(() => {
      const error = new ExchangeTimeout(waitMs);
      finish(error);
      // Still waiting for a connection: aborted as soon as undici starts it (onRequestStart).
      controller?.abort(error);
    }, waitMs);
    dispatcher.dispatch(request, {
      onRequestStart(started) {
        controller = started;
        if (done) started.abort(new ExchangeTimeout(waitMs));
      },
      onResponseStart(_controller, statusCode, headers) {
        status = statusCode;
        const value = headers[headerName];
        header = typeof value === 'string' ? value : undefined;
        lines = onLine !== undefined && statusCode === 200;
      },
      onResponseData(_controller, chunk) {
        if (!lines) {
          chunks.push(chunk);
          return;
        }
        decoder ??= new StringDecoder('utf8');
        const text = partial + decoder.write(chunk);
        let start = 0;
        for (let end = text.indexOf('\n'); end >= 0; end = text.indexOf('\n', start)) {
          if (end > start) onLine!(text.slice(start, end));
          start = end + 1;
        }
        partial = text.slice(start);
      },
      onResponseEnd() {
        finish(null);
      },
      onResponseError(_controller, error) {
        finish(error);
      },
    });
  });
}
