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
  await cluster?.kill();
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
    const owner = await ownerNode(entity);
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
    const owner = await ownerNode(entity);
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

    await owner.faults({ cutStore: true });
    const retriesBefore = client.stats.retries;
    const pending = client.ref(ClientCounter, entity).add(100, { deadlineMs: 8000, idempotencyKey: id('key') });
    await new Promise((resolve) => setTimeout(resolve, 600));
    await owner.faults({ cutStore: false });
    expect(await pending).toBe(current + 100);
    expect(client.stats.retries).toBeGreaterThan(retriesBefore);
    // Once: a repeat with the same key replays the first reply.
    expect(await client.ref(ClientCounter, entity).add(100, { idempotencyKey: id('key') })).toBe(current + 100);
    expect(await client.ref(ClientCounter, entity).get()).toBe(current + 100);
  });

  it('fails with Unavailable (not applied) when the deadline passes while the owner answers 503', async () => {
    const entity = id('never');
    const owner = await ownerNode(entity);
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
