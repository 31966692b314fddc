/**
 * concord-cluster/client and a node that predates the batch route (`POST /entity-calls` answers
 * 404, as an unknown route does): the calls of the refused batch are sent again, alone, each
 * answered once; from then on that node gets calls alone only. The node here is a stand-in
 * speaking the single-call wire (GET /cluster, POST /entity-calls/:kind/:id/:method).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createClient } from '../../src/client/index.js';
import { ClientCounter } from './client-counter.js';

let server: Server;
let url: string;
const seen = { batches: 0, singles: 0 };
const counters = new Map<string, number>();

beforeAll(async () => {
  server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk: Buffer) => {
      body += chunk.toString();
    });
    request.on('end', () => {
      const path = request.url ?? '/';
      const json = (status: number, value: unknown) => {
        response.writeHead(status, { 'content-type': 'application/json' });
        response.end(JSON.stringify(value));
      };
      if (request.method === 'GET' && path === '/cluster') {
        return json(200, {
          self: 'old',
          members: [{ name: 'old', httpAddress: url, status: 'alive' }],
          shards: { map: ['old'], epochs: [1] },
        });
      }
      if (request.method === 'POST' && path === '/entity-calls') {
        seen.batches++;
        return json(404, { error: 'no route POST /entity-calls' });
      }
      const match = /^\/entity-calls\/client-counter\/([^/]+)\/add$/.exec(path);
      if (request.method === 'POST' && match) {
        seen.singles++;
        const id = decodeURIComponent(match[1]!);
        const by = (JSON.parse(body) as { message: number }).message;
        const n = (counters.get(id) ?? 0) + by;
        counters.set(id, n);
        // A little slow, so that calls pile up behind the first two and get batched.
        setTimeout(() => json(200, { reply: n }), 20);
        return;
      }
      json(404, { error: `no route ${request.method} ${path}` });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

it('a node without the batch route: the refused batch is sent again call by call, each applied once; later calls go alone', async () => {
  const client = createClient({ nodes: [url], entities: [ClientCounter], deadlineMs: 3000 });
  try {
    const ids = Array.from({ length: 10 }, (_, i) => `e${i}`);
    const replies = await Promise.all(
      ids.flatMap((id) => [1, 2, 4].map((by) => client.ref(ClientCounter, id).add(by))),
    );
    expect(seen.batches).toBe(1);
    expect(client.stats.batches).toBe(1);
    expect(seen.singles).toBe(30);
    for (const [i, id] of ids.entries()) {
      expect(counters.get(id)).toBe(7);
      expect(new Set(replies.slice(i * 3, i * 3 + 3)).size).toBe(3);
    }
    // The node is known not to take batches: no second one, however many calls wait.
    await Promise.all(ids.map((id) => client.ref(ClientCounter, id).add(1)));
    expect(seen.batches).toBe(1);
    expect(seen.singles).toBe(40);
    for (const id of ids) expect(counters.get(id)).toBe(8);
  } finally {
    await client.close();
  }
});
