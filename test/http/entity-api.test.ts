/**
 * INTERFACE.md's entity and operations rows, row by row, against a real 3-node cluster
 * started through `concord node` — on SQLite and on PostgreSQL. Any node must give the
 * same answer.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shardOf } from '../../src/cluster/hash.js';
import {
  type Answer,
  type CliNode,
  eventually,
  hasStackTrace,
  request,
  startCliCluster,
  stopAll,
} from '../cli/harness.js';
import { type Backend, backends, freshStoreUrl } from '../support/cluster.js';

interface Entity {
  id: string;
  state: string;
  version: number;
}

const get = (node: CliNode, id: string) => request<Entity>(node, 'GET', `/entities/${id}`);
const put = (node: CliNode, id: string, state: string, headers: Record<string, string> = {}) =>
  request<Entity & { error?: string }>(node, 'PUT', `/entities/${id}`, { json: { state }, headers });

function expectEntity(answer: Answer<Entity>, id: string, state: string, version: number): void {
  expect(answer.status).toBe(200);
  expect(answer.body).toEqual({ id, state, version });
  expect(answer.headers.get('etag')).toBe(`"${version}"`);
}

function expectJsonError(answer: Answer<unknown>, status: number): void {
  expect(answer.status).toBe(status);
  expect(answer.headers.get('content-type')).toMatch(/^application\/json/);
  expect(typeof (answer.body as { error?: unknown }).error).toBe('string');
  expect(hasStackTrace(answer.text)).toBe(false);
}

describe.each(backends)('HTTP API of a 3-node cluster started with `concord node` (%s)', (backend: Backend) => {
  let nodes: CliNode[] = [];
  let n1: CliNode;
  let n2: CliNode;
  let n3: CliNode;
  const run = Math.random().toString(36).slice(2, 8);
  const id = (name: string) => `${name}-${backend}-${run}`;

  beforeAll(async () => {
    const store = await freshStoreUrl(backend);
    nodes = await startCliCluster({
      store,
      args: ['--call-timeout', '1000'],
      // debug: the test below checks that client errors never put a stack trace in the logs.
      env: { CONCORD_TEST_FAULTS: '1', CONCORD_LOG_LEVEL: 'debug' },
    });
    [n1, n2, n3] = nodes as [CliNode, CliNode, CliNode];
  });

  afterAll(async () => {
    const codes = await stopAll(nodes);
    expect(codes).toEqual(nodes.map(() => 0));
  });

  it('operations: /healthz, /readyz, /cluster, /metrics and the dashboard on every node', async () => {
    for (const node of nodes) {
      expect((await request(node, 'GET', '/healthz')).status).toBe(200);
      expect((await request(node, 'GET', '/readyz')).status).toBe(200);

      const cluster = await request<{
        self: string;
        clusterId: string;
        members: { name: string; address: string; status: string; httpAddress: string }[];
        shards: { count: number; held: number[]; owners: Record<string, number>; map: string[] };
        refusedJoins: unknown[];
      }>(node, 'GET', '/cluster');
      expect(cluster.status).toBe(200);
      expect(cluster.body.self).toBe(node.name);
      expect(cluster.body.clusterId).toMatch(/^[0-9a-f]{32}$/);
      expect(cluster.body.refusedJoins).toEqual([]);
      expect(cluster.body.members.map((m) => [m.name, m.status, m.httpAddress])).toEqual(
        nodes.map((n) => [n.name, 'alive', n.url]),
      );
      for (const member of cluster.body.members) expect(member.address).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(cluster.body.shards.count).toBe(256);
      expect(Object.values(cluster.body.shards.owners).reduce((a, b) => a + b, 0)).toBe(256);
      expect(cluster.body.shards.map).toHaveLength(256);
      expect(cluster.body.shards.held.every((s) => cluster.body.shards.map[s] === node.name)).toBe(true);

      const metrics = await request(node, 'GET', '/metrics');
      expect(metrics.status).toBe(200);
      expect(metrics.headers.get('content-type')).toMatch(/^text\/plain/);
      for (const name of [
        'concord_http_requests_total',
        'concord_http_request_duration_seconds_bucket',
        'concord_active_entities',
        'concord_shards_held',
        'concord_lease_remaining_seconds',
        'concord_commits_total',
        'concord_fenced_writes_total',
        'concord_call_retries_total',
        'concord_refused_joins_last_hour',
        'concord_peer_handshake_failures_total',
      ]) {
        expect(metrics.text).toContain(`\n${name}{`);
      }
      const held = cluster.body.shards.held.length;
      expect(metrics.text).toMatch(new RegExp(`\\nconcord_shards_held\\{node="${node.name}"\\} ${held}\\n`));
      expect(metrics.text).toMatch(
        /concord_http_requests_total\{method="GET",route="\/cluster",status="200",node="n\d"\} \d+/,
      );

      const page = await request(node, 'GET', '/');
      expect(page.status).toBe(200);
      expect(page.headers.get('content-type')).toMatch(/^text\/html/);
      expect(page.text).toContain('<form');
      expect(page.text).toContain('/cluster');
      expect(page.text).not.toMatch(/(src|href)="https?:/); // self-contained: no external assets
    }
  });

  it('the classic walk-through: any node gives the same answer', async () => {
    const e = id('entity_1');
    for (const node of nodes) expectEntity(await get(node, e), e, 'initialized', 0);
    expectEntity(await put(n1, e, 'working'), e, 'working', 1);
    for (const node of nodes) expectEntity(await get(node, e), e, 'working', 1);
    expectEntity(await put(n2, e, 'finalized'), e, 'finalized', 2);
    for (const node of nodes) expectEntity(await get(node, e), e, 'finalized', 2);
    // Every PUT is an acknowledged change, even one that writes the same state.
    expectEntity(await put(n3, e, 'finalized'), e, 'finalized', 3);
    expectEntity(await get(n1, e), e, 'finalized', 3);
  });

  it('If-Match: the current version succeeds, a stale one is 412 with the current value', async () => {
    const e = id('cas');
    expectEntity(await put(n1, e, 'working', { 'if-match': '"0"' }), e, 'working', 1);
    expectEntity(await put(n2, e, 'finalized', { 'if-match': '"1"' }), e, 'finalized', 2);

    const stale = await put(n3, e, 'initialized', { 'if-match': '"1"' });
    expectJsonError(stale, 412);
    expect(stale.body).toMatchObject({ id: e, state: 'finalized', version: 2 });
    expect(stale.headers.get('etag')).toBe('"2"');
    for (const node of nodes) expectEntity(await get(node, e), e, 'finalized', 2);

    // A weak or bare tag carries the same version.
    expectEntity(await put(n3, e, 'working', { 'if-match': 'W/"2"' }), e, 'working', 3);
    expectEntity(await put(n1, e, 'finalized', { 'if-match': '3' }), e, 'finalized', 4);
  });

  it('If-Match is decided inside the entity turn: of concurrent writers with one version, exactly one wins', async () => {
    const e = id('race');
    expectEntity(await put(n1, e, 'working'), e, 'working', 1);
    const answers = await Promise.all(
      Array.from({ length: 9 }, (_, i) =>
        put(nodes[i % 3]!, e, i % 2 ? 'finalized' : 'initialized', { 'if-match': '"1"' }),
      ),
    );
    const statuses = answers.map((a) => a.status).sort();
    expect(statuses).toEqual([200, 412, 412, 412, 412, 412, 412, 412, 412]);
    const winner = answers.find((a) => a.status === 200)!;
    expect(winner.body.version).toBe(2);
    for (const node of nodes) expectEntity(await get(node, e), e, winner.body.state, 2);
  });

  it('bad input answers a clear 4xx JSON without a stack, and nothing is lost', async () => {
    const e = id('keep');
    expectEntity(await put(n1, e, 'working'), e, 'working', 1);
    const path = `/entities/${e}`;
    const json = { 'content-type': 'application/json' };
    const cases: [string, number, (node: CliNode) => Promise<Answer>][] = [
      ['invalid JSON', 400, (n) => request(n, 'PUT', path, { raw: '{"state": "work', headers: json })],
      ['unknown state', 400, (n) => request(n, 'PUT', path, { json: { state: 'done' } })],
      ['state of the wrong type', 400, (n) => request(n, 'PUT', path, { json: { state: 7 } })],
      ['no state', 400, (n) => request(n, 'PUT', path, { json: { status: 'working' } })],
      ['not an object', 400, (n) => request(n, 'PUT', path, { json: ['working'] })],
      ['empty body', 400, (n) => request(n, 'PUT', path, { raw: '', headers: json })],
      [
        'form body',
        415,
        (n) =>
          request(n, 'PUT', path, {
            raw: 'state=working',
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
          }),
      ],
      [
        'non-numeric If-Match',
        400,
        (n) => request(n, 'PUT', path, { json: { state: 'finalized' }, headers: { 'if-match': '"abc"' } }),
      ],
      [
        'two If-Match versions',
        400,
        (n) => request(n, 'PUT', path, { json: { state: 'finalized' }, headers: { 'if-match': '"1", "2"' } }),
      ],
      [
        'stale If-Match',
        412,
        (n) => request(n, 'PUT', path, { json: { state: 'finalized' }, headers: { 'if-match': '"0"' } }),
      ],
      [
        'oversized body',
        413,
        (n) => request(n, 'PUT', path, { json: { state: 'finalized', pad: 'x'.repeat(70_000) } }),
      ],
      ['overlong id', 400, (n) => request(n, 'GET', `/entities/${'a'.repeat(201)}`)],
      ['very long id', 400, (n) => request(n, 'PUT', `/entities/${'a'.repeat(6000)}`, { json: { state: 'working' } })],
      ['id with a space', 400, (n) => request(n, 'GET', '/entities/bad%20id')],
      ['id with a slash', 404, (n) => request(n, 'GET', '/entities/a%2Fb/c')],
      ['malformed escape', 400, (n) => request(n, 'GET', '/entities/%E0%A4%A')],
      ['unknown route', 404, (n) => request(n, 'GET', '/nope')],
      ['wrong method', 405, (n) => request(n, 'DELETE', path)],
      ['wrong method on an operation route', 405, (n) => request(n, 'POST', '/cluster', { json: {} })],
    ];
    for (const [what, status, send] of cases) {
      for (const node of nodes) {
        const answer = await send(node);
        expect({ what, node: node.name, status: answer.status }).toEqual({ what, node: node.name, status });
        expectJsonError(answer, status);
      }
    }
    expect((await request(n1, 'DELETE', path)).headers.get('allow')).toBe('GET, HEAD, PUT');

    // Still serving, and the value written before is intact.
    for (const node of nodes) {
      expect((await request(node, 'GET', '/readyz')).status).toBe(200);
      expectEntity(await get(node, e), e, 'working', 1);
    }
    expectEntity(await put(n2, e, 'finalized', { 'if-match': '"1"' }), e, 'finalized', 2);
    // Client errors are logged at debug without a stack trace.
    for (const node of nodes) {
      expect(node.stderr()).toContain('client error');
      expect(hasStackTrace(node.stderr())).toBe(false);
    }
  });

  it('an unreachable owner: 504 while the outcome is unknown, then 503 + Retry-After at once; served again after healing', async () => {
    // An id owned by n2, asked through n1 while the network between n1 and the others is cut.
    const held = new Set((await request<{ shards: { held: number[] } }>(n2, 'GET', '/cluster')).body.shards.held);
    let e = '';
    for (let i = 0; !e && i < 100_000; i++)
      if (held.has(shardOf('entity-state', id(`cut-${i}`), 256))) e = id(`cut-${i}`);
    expect(e).not.toBe('');
    expectEntity(await put(n1, e, 'working'), e, 'working', 1);

    await request(n1, 'POST', '/_test/faults', { json: { dropTo: ['n2', 'n3'] } });
    await request(n2, 'POST', '/_test/faults', { json: { dropTo: ['n1'] } });
    await request(n3, 'POST', '/_test/faults', { json: { dropTo: ['n1'] } });
    try {
      // Sent on a link that went silent: nobody can know whether it ran. 504, never 503.
      const unknown = await put(n1, e, 'finalized');
      expectJsonError(unknown, 504);
      expect(unknown.body).toMatchObject({ code: 'TIMEOUT', maybeApplied: true });
      // Once n1 knows it cannot reach the others it is not ready, and answers at once.
      await eventually(async () => expect((await request(n1, 'GET', '/readyz')).status).toBe(503), 5000);
      const started = performance.now();
      const read = await get(n1, e);
      expect(performance.now() - started).toBeLessThan(500);
      expectJsonError(read, 503);
      expect(read.body).toMatchObject({ code: 'UNAVAILABLE', maybeApplied: false });
      expect(Number(read.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      // The owner, on the majority side, still answers; the 504 write did not (or did) land — either way it is one history.
      const owner = await get(n2, e);
      expect(owner.status).toBe(200);
      expect(['working', 'finalized']).toContain(owner.body.state);
    } finally {
      await Promise.all(nodes.map((n) => request(n, 'POST', '/_test/faults', { json: { allow: 'all' } })));
    }
    await eventually(async () => expect((await get(n1, e)).status).toBe(200), 15_000, 100);
  });

  it('/readyz answers 503 while the node cannot reach its store, and 200 again once it can', async () => {
    await request(n3, 'POST', '/_test/faults', { json: { cutStore: true } });
    try {
      await eventually(async () => {
        const answer = await request(n3, 'GET', '/readyz');
        expectJsonError(answer, 503);
        expect(answer.headers.get('retry-after')).toBe('1');
      }, 5000);
    } finally {
      await request(n3, 'POST', '/_test/faults', { json: { cutStore: false } });
    }
    await eventually(async () => expect((await request(n3, 'GET', '/readyz')).status).toBe(200), 10_000);
  });
});
