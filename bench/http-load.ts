import autocannon from 'autocannon';
import { latencyHistogram, sleep } from './load-loop.js';
import type { LoadResult } from './protocol.js';
import { STATES } from './states.js';

/**
 * The HTTP driver: autocannon against every node of the cluster (the `concurrency`
 * connections spread round-robin over the nodes, one request in flight per connection: a
 * closed loop like the library driver). Each request picks a random entity and, with
 * probability writeRatio, is a `PUT /entities/:id` instead of a `GET`. Latencies of every
 * instance go into one HDR histogram (µs), counted only inside the measuring window.
 */

export interface HttpLoadOptions {
  urls: string[];
  prefix: string;
  count: number;
  writeRatio: number;
  /** Every PUT carries a fresh `Idempotency-Key` (workload WK). */
  idempotencyKeys?: boolean;
  concurrency: number;
  warmupMs: number;
  durationMs: number;
  /** Called when the measuring window opens and closes (CPU samples of the nodes). */
  onWindow?: (edge: 'start' | 'end') => Promise<void>;
}

const PUT_HEADERS = { 'content-type': 'application/json' };

export async function httpLoad(options: HttpLoadOptions): Promise<LoadResult> {
  const histogram = latencyHistogram();
  let ops = 0;
  let errors = 0;
  const errorCodes: Record<string, number> = {};
  const fail = (code: string) => {
    errors++;
    errorCodes[code] = (errorCodes[code] ?? 0) + 1;
  };
  let measuring = false;
  let n = 0;
  const keyPrefix = `b${Date.now().toString(36)}-`;
  const shares = options.urls.map(
    (_, i) =>
      Math.floor(options.concurrency / options.urls.length) + (i < options.concurrency % options.urls.length ? 1 : 0),
  );
  const setupRequest = (request: autocannon.Request): autocannon.Request => {
    const id = `${options.prefix}${Math.floor(Math.random() * options.count)}`;
    request.path = `/entities/${id}`;
    if (options.writeRatio > 0 && Math.random() < options.writeRatio) {
      request.method = 'PUT';
      request.headers = options.idempotencyKeys
        ? { ...PUT_HEADERS, 'idempotency-key': `${keyPrefix}${n}` }
        : PUT_HEADERS;
      request.body = `{"state":"${STATES[n++ % STATES.length]}"}`;
    } else {
      request.method = 'GET';
      request.headers = {};
      request.body = undefined;
    }
    return request;
  };
  const instances: autocannon.Instance[] = [];
  const finished: Promise<void>[] = [];
  options.urls.forEach((url, i) => {
    const connections = shares[i]!;
    if (connections === 0) return;
    let settle: () => void = () => {};
    finished.push(
      new Promise<void>((resolve) => {
        settle = resolve;
      }),
    );
    const instance = autocannon(
      {
        url,
        connections,
        pipelining: 1,
        duration: 3600,
        timeout: 30,
        requests: [{ setupRequest }],
      },
      () => settle(),
    );
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (!measuring) return;
      if (statusCode >= 200 && statusCode < 300) {
        histogram.recordValue(Math.max(1, Math.round(responseTime * 1000)));
        ops++;
      } else fail(`HTTP ${statusCode}`);
    });
    instance.on('reqError', (error: unknown) => {
      if (measuring) fail(String((error as { code?: unknown }).code ?? 'request error'));
    });
    instances.push(instance);
  });
  await sleep(options.warmupMs);
  await options.onWindow?.('start');
  measuring = true;
  const started = performance.now();
  await sleep(options.durationMs);
  measuring = false;
  const durationMs = performance.now() - started;
  await options.onWindow?.('end');
  for (const instance of instances) instance.stop();
  // autocannon finishes on its next 1 s tick; its connections are closed by then anyway.
  await Promise.race([Promise.all(finished), sleep(250)]);
  const result: LoadResult = {
    ops,
    errors,
    errorCodes,
    durationMs,
    p50: histogram.getValueAtPercentile(50),
    p90: histogram.getValueAtPercentile(90),
    p99: histogram.getValueAtPercentile(99),
    max: histogram.maxValue,
  };
  histogram.destroy();
  return result;
}
