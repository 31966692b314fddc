/**
 * concord-cluster/client against a real 3-node cluster (`concord node` processes over real
 * sockets, SQLite store): every call goes straight to its owner (no node forwards), the
 * entity-call route's opt-in (definitions' `exposed` and `--expose`) and error answers, MOVED for a direct call to a non-owner, the
 * per-call deadline, and which failures are retried (503 yes; 504 only with an idempotency key,
 * then applied once).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ConcordClient, createClient, Timeout, Unavailable } from '../../src/client/index.js';
import { defineEntity } from '../../src/entity/define.js';
import { ConcordError } from '../../src/errors.js';
import { type ClusterNode, LocalCluster } from '../../src/testing/local-cluster.js';
import { CLIENT_ENTITIES, ClientCounter } from './client-counter.js';

let cluster: LocalCluster;
let client: ConcordClient;
const run = Math.random().toString(36).slice(2, 8);
const id = (name: string) => `${name}-${run}`;

interface OwnerBody {
  owner: string;
}

async function ownerNode(entity: string): Promise<ClusterNode> {
  const { body } = await cluster.nodes[0]!.get<OwnerBody>(`/cluster/owner/client-counter/${entity}`);
  return cluster.node(body.owner);
}

/**
 * The owner, once ownership has settled (a node whose store an earlier test cut for seconds
 * rejoins and takes its shards back for a while), with the client's map refreshed: a test that
 * then faults this node faults the node the client calls.
 */
async function settledOwnerNode(entity: string): Promise<ClusterNode> {
  await cluster.balanced();
  await client.refresh();
  return ownerNode(entity);
}

/** POST /entity-calls, reading its NDJSON answer line by line: each line with when it arrived (ms). */
async function postBatch(
  node: ClusterNode,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{
  status: number;
  contentType: string | null;
  lines: (Record<string, unknown> & { i: number; at: number })[];
  results: Record<string, unknown>[];
}> {
  const started = performance.now();
  const response = await fetch(`${node.url}/entity-calls`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const lines: (Record<string, unknown> & { i: number; at: number })[] = [];
  const decoder = new TextDecoder();
  let partial = '';
  const reader = response.body!.getReader();
  for (let read = await reader.read(); !read.done; read = await reader.read()) {
    partial += decoder.decode(read.value, { stream: true });
    const complete = partial.split('\n');
    partial = complete.pop()!;
    for (const line of complete) if (line) lines.push({ ...JSON.parse(line), at: performance.now() - started });
  }
  const results: Record<string, unknown>[] = [];
  for (const { i, at: _at, ...result } of lines) results[i] = result;
  return { status: response.status, contentType: response.headers.get('content-type'), lines, results };
}

const remoteCalls = async () => {
  let sum = 0;
  for (const node of cluster.nodes) sum += await node.metric('concord_remote_calls_total');
  return sum;
};

beforeAll(async () => {
  cluster = await LocalCluster.start({
    nodes: 3,
    entities: CLIENT_ENTITIES,
    // The operator exposes one more handler than the definition does.
    args: ['--expose', 'client-counter/reset'],
    env: { CONCORD_LOG_LEVEL: 'warn' },
  });
  await cluster.eventually(async () => {
    const { body } = await cluster.nodes[0]!.get<{ shards: { map: (string | null)[] } }>('/cluster');
    const owners = new Set(body.shards.map);
    if (owners.has(null) || owners.size !== 3) throw new Error('shard map not settled');
  });
  client = createClient({ nodes: [cluster.nodes[0]!.url], entities: [ClientCounter], deadlineMs: 3000 });
}, 40_000);

afterAll(async () => {
  await client?.close();
  await cluster?.destroy();
});

describe('concord-cluster/client', () => {
  it('sends every call straight to the owner: no node forwards, no MOVED', async () => {
    await client.refresh();
    const before = await remoteCalls();
    const ids = Array.from({ length: 30 }, (_, i) => id(`direct${i}`));
    for (const entity of ids) {
      expect(await client.ref(ClientCounter, entity).add(2)).toBe(2);
      expect(await client.ref(ClientCounter, entity).get()).toBe(2);
    }
    expect(await remoteCalls()).toBe(before);
    expect(client.stats.moved).toBe(0);
    expect(client.stats.undirected).toBe(0);
    // The client's idea of each owner is the cluster's, and spans all three nodes.
    const owners = new Set<string>();
    for (const entity of ids) {
      const expected = (await ownerNode(entity)).name;
      expect(client.ownerOf('client-counter', entity)).toBe(expected);
      owners.add(expected);
    }
    expect(owners.size).toBe(3);
  });

  it('the route: Concord-Owner on answers, MOVED for a direct call to a non-owner, forwarding without it', async () => {
    const entity = id('route');
    const owner = await ownerNode(entity);
    const other = cluster.nodes.find((n) => n !== owner)!;
    const path = `/entity-calls/client-counter/${entity}/add`;
    const moved = await other.post<Record<string, unknown>>(path, { message: 1 }, { 'concord-route': 'direct' });
    expect(moved.status).toBe(421);
    expect(moved.body).toMatchObject({ code: 'MOVED', owner: owner.name, maybeApplied: false, ownerUrl: owner.url });
    expect(typeof moved.body['shard']).toBe('number');
    // Nothing ran: the counter is still 0.
    const forwarded = await other.post<{ reply: number }>(path, { message: 1 });
    expect(forwarded.status).toBe(200);
    expect(forwarded.body).toEqual({ reply: 1 });
    expect(forwarded.headers.get('concord-owner')).toBe(owner.name);
  });

  it('answers 404 for kinds and handlers not exposed, 400 JSON for bad bodies and headers', async () => {
    const n1 = cluster.nodes[0]!;
    const cases: [string, unknown, Record<string, string>, number][] = [
      [`/entity-calls/client-internal/${id('x')}/get`, {}, {}, 404],
      [`/entity-calls/client-counter/${id('x')}/nope`, {}, {}, 404],
      [`/entity-calls/no-such-kind/${id('x')}/get`, {}, {}, 404],
      [`/entity-calls/client-counter/${id('x')}/get`, { message: 1, extra: true }, {}, 400],
      [`/entity-calls/client-counter/${id('x')}/get`, [1, 2], {}, 400],
      [`/entity-calls/client-counter/bad%20id/get`, {}, {}, 400],
      [`/entity-calls/client-counter/${id('x')}/get`, {}, { 'concord-deadline-ms': 'soon' }, 400],
      [`/entity-calls/client-counter/${id('x')}/get`, {}, { 'idempotency-key': '' }, 400],
    ];
    for (const [path, body, headers, status] of cases) {
      const answer = await n1.post<{ error?: unknown }>(path, body, headers);
      expect(answer.status, `${path} ${JSON.stringify(body)}`).toBe(status);
      expect(answer.headers.get('content-type')).toMatch(/^application\/json/);
      expect(typeof answer.body.error).toBe('string');
    }
    // `--expose client-counter/reset` made reset callable too.
    expect(await client.ref(ClientCounter, id('x')).reset()).toBe(0);
    // A call without a message needs no body at all.
    const noBody = await fetch(`${n1.url}/entity-calls/client-counter/${id('nobody')}/get`, { method: 'POST' });
    expect(noBody.status).toBe(200);
    expect(await noBody.json()).toEqual({ reply: 0 });
    const invalidJson = await fetch(`${n1.url}/entity-calls/client-counter/${id('x')}/get`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"message":',
    });
    expect(invalidJson.status).toBe(400);
    expect(((await invalidJson.json()) as { error?: unknown }).error).toBeTypeOf('string');
    // The client throws the concord error for them.
    const Hidden = defineEntity('client-internal', { initial: () => ({}), handlers: { get: () => 's' } });
    const other = createClient({ nodes: [n1.url], entities: [Hidden] });
    try {
      await expect(other.ref(Hidden, id('x')).get()).rejects.toMatchObject({ code: 'UNKNOWN_ENTITY_KIND' });
    } finally {
      await other.close();
    }
  });

  it('the batch route answers every call as if sent alone, each as soon as it is done; a malformed batch is refused whole, nothing run', async () => {
    const mine = id('batch-mine');
    const owner = await ownerNode(mine);
    let theirs = id('batch-theirs');
    for (let i = 0; (await ownerNode(theirs)) === owner; i++) theirs = id(`batch-theirs${i}`);
    // Another entity of the same node for the slow call (one entity runs one call at a time).
    let sleepy = id('batch-slow');
    for (let i = 0; (await ownerNode(sleepy)) !== owner; i++) sleepy = id(`batch-slow${i}`);
    const key = `k-${run}`;
    const direct = { 'concord-route': 'direct' };
    const started = performance.now();
    const batch = await postBatch(
      owner,
      {
        calls: [
          { kind: 'client-counter', id: sleepy, method: 'slow', message: 1500 },
          { kind: 'client-counter', id: mine, method: 'add', message: 1 },
          { kind: 'client-counter', id: theirs, method: 'add', message: 1 },
          { kind: 'client-internal', id: mine, method: 'get' },
          { kind: 'client-counter', id: mine, method: 'nope' },
          { kind: 'client-counter', id: mine, method: 'add', message: 10, key },
          { kind: 'client-counter', id: mine, method: 'add', message: 10, key },
          { kind: 'client-counter', id: mine, method: 'add', message: 99, key },
        ],
      },
      direct,
    );
    expect(batch.status).toBe(200);
    expect(batch.contentType).toMatch(/^application\/x-ndjson/);
    expect(batch.lines.map((line) => line.i).sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    // The slow call's line comes last, ~1.5 s in; every other call was answered long before.
    expect(batch.lines.at(-1)?.i).toBe(0);
    expect(batch.lines.at(-1)?.at).toBeGreaterThanOrEqual(1400);
    expect(Math.max(...batch.lines.slice(0, -1).map((line) => line.at))).toBeLessThan(1000);
    expect(performance.now() - started).toBeGreaterThanOrEqual(1400);
    const [slow, plain, moved, hidden, unknown, keyed, replay, reused] = batch.results;
    expect(slow).toMatchObject({ status: 200, owner: owner.name });
    expect(plain).toEqual({ status: 200, reply: 1, owner: owner.name });
    // Not this node's entity: MOVED, and nothing ran (its counter is still 0 below).
    expect(moved).toMatchObject({
      status: 421,
      code: 'MOVED',
      maybeApplied: false,
      owner: (await ownerNode(theirs)).name,
    });
    expect(hidden).toMatchObject({ status: 404, code: 'UNKNOWN_ENTITY_KIND' });
    expect(unknown).toMatchObject({ status: 404, code: 'UNKNOWN_ENTITY_KIND' });
    // One key, applied once: the replay answers the first reply; another message with it is refused.
    expect(keyed).toMatchObject({ status: 200 });
    expect(replay).toEqual(keyed);
    expect(reused).toMatchObject({ status: 422, code: 'IDEMPOTENCY_KEY_REUSED' });
    expect(await client.ref(ClientCounter, mine).get()).toBe(11);
    expect(await client.ref(ClientCounter, theirs).get()).toBe(0);

    // Without Concord-Route the node forwards, as for a call alone.
    const forwarded = await postBatch(owner, {
      calls: [{ kind: 'client-counter', id: theirs, method: 'add', message: 5 }],
    });
    expect(forwarded.results).toEqual([{ status: 200, reply: 5, owner: (await ownerNode(theirs)).name }]);

    // Malformed: 400 for the whole request, and none of its calls ran.
    const good = { kind: 'client-counter', id: mine, method: 'add', message: 100 };
    const bad: unknown[] = [
      { calls: [] },
      { calls: [good, { kind: 'client-counter', id: 'bad id', method: 'get' }] },
      { calls: [good, { kind: 'client-counter', id: mine, method: 'get', extra: 1 }] },
      { calls: [good, { kind: 'client-counter', id: mine, method: 'get', key: '' }] },
      { calls: [good, { kind: 'client-counter', id: mine, method: 'get', deadlineMs: 0 }] },
      { calls: [good], more: true },
      { calls: Array.from({ length: 1001 }, () => ({ kind: 'k', id: 'x', method: 'm' })) },
      [good],
    ];
    for (const body of bad) {
      const answer = await owner.post<{ error?: unknown; code?: unknown }>('/entity-calls', body, direct);
      expect(answer.status, JSON.stringify(body).slice(0, 200)).toBe(400);
      expect(answer.body.code).toBe('BAD_MESSAGE');
      expect(typeof answer.body.error).toBe('string');
    }
    expect(await client.ref(ClientCounter, mine).get()).toBe(11);
  });

  it('a caller that goes away in the middle of a batch leaves the node serving', async () => {
    const entity = id('abandoned');
    const owner = await ownerNode(entity);
    const aborted = new AbortController();
    const request = fetch(`${owner.url}/entity-calls`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        calls: [
          { kind: 'client-counter', id: entity, method: 'slow', message: 600 },
          { kind: 'client-counter', id: id('abandoned-other'), method: 'get' },
        ],
      }),
      signal: aborted.signal,
    }).then(async (response) => {
      // The first line (the quick call) arrives; then the caller hangs up mid-answer.
      const reader = response.body!.getReader();
      await reader.read();
      aborted.abort();
    });
    await request.catch(() => {});
    await new Promise((resolve) => setTimeout(resolve, 900));
    expect((await owner.get('/healthz')).status).toBe(200);
    expect(await client.ref(ClientCounter, entity).get()).toBe(0);
    expect(owner.logs()).not.toMatch(/ERR_STREAM|Uncaught|unhandled/i);
  });

  it('under concurrency the client batches the calls waiting for a node; each is answered as alone, none forwarded', async () => {
    const batching = createClient({
      nodes: [cluster.nodes[0]!.url],
      entities: [ClientCounter],
      autoIdempotencyKeys: (_kind, method) => method === 'add',
    });
    try {
      await batching.refresh();
      const before = await remoteCalls();
      const ids = Array.from({ length: 40 }, (_, i) => id(`batched${i}`));
      // 40 entities × 5 concurrent adds of 1, 2, 4, 8, 16: all at once.
      const replies = await Promise.all(
        ids.flatMap((entity) => [1, 2, 4, 8, 16].map((by) => batching.ref(ClientCounter, entity).add(by))),
      );
      expect(batching.stats.batches).toBeGreaterThan(0);
      expect(batching.stats.batchedCalls).toBeGreaterThan(100);
      expect(batching.stats.moved).toBe(0);
      expect(batching.stats.retries).toBe(0);
      expect(await remoteCalls()).toBe(before);
      for (const [i, entity] of ids.entries()) {
        // Every add applied exactly once, in some order: the replies are the running sums.
        const mine = replies.slice(i * 5, i * 5 + 5);
        expect(new Set(mine).size).toBe(5);
        expect(Math.max(...mine)).toBe(31);
        expect(await batching.ref(ClientCounter, entity).get()).toBe(31);
      }
      // Calls with large messages (2 KB each, 200 KB in all) are split into batches under the
      // node's body limit (64 KiB): none is refused as too large.
      const large = 'x'.repeat(2000);
      const batchesBeforeLarge = batching.stats.batches;
      const tooLarge = async () => {
        let sum = 0;
        for (const node of cluster.nodes) sum += await node.metric('concord_http_requests_total', { status: '413' });
        return sum;
      };
      const tooLargeBefore = await tooLarge();
      const answers = await Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          batching.callByName('client-counter', ids[i % ids.length]!, 'get', large),
        ),
      );
      expect(answers).toEqual(Array.from({ length: 100 }, () => 31));
      expect(batching.stats.batches - batchesBeforeLarge).toBeGreaterThanOrEqual(2);
      expect(await tooLarge()).toBe(tooLargeBefore);
      // A key the batch form cannot carry (not printable ASCII) goes alone, and works as a header.
      const odd = `clé-${run}`;
      const bare = Array.from({ length: 20 }, () => batching.ref(ClientCounter, ids[0]!).get());
      await expect(batching.ref(ClientCounter, ids[0]!).add(1, { idempotencyKey: odd })).rejects.toMatchObject({
        code: 'BAD_MESSAGE',
      });
      expect(await Promise.all(bare)).toEqual(Array.from({ length: 20 }, () => 31));
    } finally {
      await batching.close();
    }
  });

  it('a call does not wait behind two slow calls in flight to its node', async () => {
    const first = id('sleepy-a');
    const node = await ownerNode(first);
    const sameNode = async (prefix: string) => {
      for (let i = 0; ; i++) {
        const candidate = id(`${prefix}${i}`);
        if ((await ownerNode(candidate)) === node) return candidate;
      }
    };
    const [second, quick] = [await sameNode('sleepy-b'), await sameNode('quick')];
    await client.refresh();
    const slow = [first, second].map((entity) => client.ref(ClientCounter, entity).slow(1500));
    await new Promise((resolve) => setTimeout(resolve, 50));
    const started = performance.now();
    expect(await client.ref(ClientCounter, quick).get()).toBe(0);
    expect(performance.now() - started).toBeLessThan(500);
    expect(await Promise.all(slow)).toEqual([0, 0]);
  });

  it('honours the deadline of a call', async () => {
    const started = performance.now();
    const error = await client
      .ref(ClientCounter, id('slow'))
      .slow(3000, { deadlineMs: 300 })
      .catch((e: unknown) => e);
    const took = performance.now() - started;
    expect(error).toBeInstanceOf(ConcordError);
    expect(error).toBeInstanceOf(Timeout);
    expect(took).toBeGreaterThanOrEqual(250);
    expect(took).toBeLessThan(1000);
  });

  it('retries a 503 (certainly not applied) until it succeeds', async () => {
    const entity = id('unavailable');
    const owner = await settledOwnerNode(entity);
    await owner.faults({ cutStore: true });
    const retriesBefore = client.stats.retries;
    const pending = client.ref(ClientCounter, entity).add(5, { deadlineMs: 8000 });
    await new Promise((resolve) => setTimeout(resolve, 600));
    await owner.faults({ cutStore: false });
    expect(await pending).toBe(5);
    expect(client.stats.retries).toBeGreaterThan(retriesBefore);
    expect(await client.ref(ClientCounter, entity).get()).toBe(5);
  });

  it('does not retry a 504 without an idempotency key; with one it retries and applies once', async () => {
    const entity = id('unknown');
    const owner = await settledOwnerNode(entity);
    expect(await client.ref(ClientCounter, entity).add(1)).toBe(1);
    await owner.faults({ cutStore: true });
    try {
      const retriesBefore = client.stats.retries;
      const error = await client
        .ref(ClientCounter, entity)
        .add(10, { deadlineMs: 3000 })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(Timeout);
      expect((error as Timeout).details?.['maybeApplied']).toBe(true);
      expect(client.stats.retries).toBe(retriesBefore);
    } finally {
      await owner.faults({ cutStore: false });
    }
    const current = await client.ref(ClientCounter, entity).get();
    expect(current).toBe(1);

    // The cut above outlasted the lease: the owner may be taking its shards back still.
    const again = await settledOwnerNode(entity);
    await again.faults({ cutStore: true });
    const retriesBefore = client.stats.retries;
    const pending = client.ref(ClientCounter, entity).add(100, { deadlineMs: 8000, idempotencyKey: id('key') });
    await new Promise((resolve) => setTimeout(resolve, 600));
    await again.faults({ cutStore: false });
    expect(await pending).toBe(current + 100);
    expect(client.stats.retries).toBeGreaterThan(retriesBefore);
    // Once: a repeat with the same key replays the first reply.
    expect(await client.ref(ClientCounter, entity).add(100, { idempotencyKey: id('key') })).toBe(current + 100);
    expect(await client.ref(ClientCounter, entity).get()).toBe(current + 100);
  });

  it('fails with Unavailable (not applied) when the deadline passes while the owner answers 503', async () => {
    const entity = id('never');
    const owner = await settledOwnerNode(entity);
    await owner.faults({ cutStore: true });
    try {
      const error = await client
        .ref(ClientCounter, entity)
        .get(undefined, { deadlineMs: 500 })
        .catch((e: unknown) => e);
      expect(error, String(error)).toBeInstanceOf(Unavailable);
    } finally {
      await owner.faults({ cutStore: false });
    }
  });
});
