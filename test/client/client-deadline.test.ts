/**
 * The client's own bound on a call: against a server that takes the request and never answers
 * (a hung process), the call fails as `Timeout` (it may have run) at its deadline, and the
 * connection is not left waiting. No cluster is needed: the server is a plain HTTP server.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, Timeout } from '../../src/client/index.js';
import { defineEntity } from '../../src/entity/define.js';

const Counter = defineEntity('counter', {
  initial: () => ({ n: 0 }),
  handlers: { get: (state) => state.n },
});

describe('concord-cluster/client deadline', () => {
  let server: Server;
  let url: string;
  let posts = 0;

  beforeAll(async () => {
    server = createServer((request, response) => {
      // No shard map to give (the client then sends calls to any seed); calls are never answered.
      if (request.method === 'GET') {
        response.writeHead(500).end();
        return;
      }
      posts++;
      request.resume();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('gives up on a request that is never answered at the call deadline, as Timeout', async () => {
    const client = createClient({ nodes: [url], entities: [Counter], refreshIntervalMs: 0 });
    try {
      for (const deadlineMs of [300, 700]) {
        const before = posts;
        const started = performance.now();
        const error = await client
          .ref(Counter, 'c1')
          .get(undefined, { deadlineMs })
          .catch((e: unknown) => e);
        const took = performance.now() - started;
        expect(error, String(error)).toBeInstanceOf(Timeout);
        expect((error as Timeout).details?.['maybeApplied']).toBe(true);
        expect(posts - before).toBe(1); // sent once: without an idempotency key it is not retried
        expect(took).toBeGreaterThanOrEqual(deadlineMs - 20);
        expect(took).toBeLessThan(deadlineMs + 400);
      }
    } finally {
      await client.close();
    }
  });
});
