/**
 * `Idempotency-Key` over HTTP, on real `concord node` processes (LocalCluster) on both stores:
 * replays, reused keys (422), malformed keys (400) on every mutating route of the example apps,
 * and 1,000 keyed `PUT /entities/:id` on one entity with its owner killed (-9) and restarted
 * mid-flight, every failure (503, 504, connection error) retried with its key until 200: the
 * entity's version — acknowledged changes — ends at exactly 1,000.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shardOf } from '../../src/cluster/hash.js';
import { type ClusterNode, type HttpResult, LocalCluster } from '../../src/testing/local-cluster.js';
import { type Backend, backends, freshStoreUrl } from '../support/cluster.js';

interface ClusterBody {
  members: { name: string; status: string }[];
  shards: { map: (string | null)[] };
}

interface EntityBody {
  id: string;
  state: string;
  version: number;
  error?: string;
  code?: string;
}

const STATES = ['working', 'finalized', 'initialized'] as const;
const PASSWORD = 'correct horse battery';

async function waitSettled(cluster: LocalCluster): Promise<void> {
  await cluster.eventually(
    async () => {
      for (const node of cluster.nodes) {
        const { body } = await node.get<ClusterBody>('/cluster');
        if (body.members.filter((m) => m.status === 'alive').length !== cluster.nodes.length) {
          throw new Error('joining');
        }
        if (body.shards.map.some((owner) => owner === null)) throw new Error('shards not settled');
      }
    },
    { timeout: 20_000 },
  );
}

/** A fresh id of `kind` whose shard `owner` holds (per `via`'s shard map). */
async function idOwnedBy(via: ClusterNode, kind: string, owner: string, prefix: string): Promise<string> {
  const map = (await via.get<ClusterBody>('/cluster')).body.shards.map;
  for (let i = 0; i < 100_000; i++) {
    const id = `${prefix}${i}`;
    if (map[shardOf(kind, id, map.length)] === owner) return id;
  }
  throw new Error(`${owner} holds no shard`);
}

const keyed = (key: string) => ({ 'idempotency-key': `"${key}"` });

describe.each(backends)('Idempotency-Key over HTTP (%s)', (backend: Backend) => {
  let cluster: LocalCluster;
  let n1: ClusterNode;
  let n2: ClusterNode;
  let n3: ClusterNode;

  beforeAll(async () => {
    cluster = await LocalCluster.start({ nodes: 3, store: await freshStoreUrl(backend) });
    [n1, n2, n3] = cluster.nodes as [ClusterNode, ClusterNode, ClusterNode];
    await waitSettled(cluster);
  });

  afterAll(async () => {
    await cluster?.destroy();
  });

  it('PUT /entities/:id: a retry replays the first answer, another body answers 422, a bad key 400', async () => {
    const put = (node: ClusterNode, state: string, headers: Record<string, string> = {}) =>
      node.put<EntityBody>('/entities/keyed-1', { state }, headers);
    const first = await put(n1, 'working', keyed('k1'));
    expect(first.status).toBe(200);
    expect(first.body).toEqual({ id: 'keyed-1', state: 'working', version: 1 });
    // Meanwhile another change lands: a replay still answers what the keyed request did.
    expect((await put(n2, 'finalized')).body.version).toBe(2);
    for (const node of [n1, n2, n3]) {
      const again = await put(node, 'working', keyed('k1'));
      expect(again.status).toBe(200);
      expect(again.body).toEqual(first.body);
      expect(again.headers.get('etag')).toBe('"1"');
    }
    // The bare token names the same key.
    expect((await put(n3, 'working', { 'idempotency-key': 'k1' })).body).toEqual(first.body);
    const reused = await put(n2, 'initialized', keyed('k1'));
    expect(reused.status).toBe(422);
    expect(reused.body).toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED' });
    expect(typeof reused.body.error).toBe('string');
    // If-Match is part of the request: with it, the same key is another request.
    expect((await put(n1, 'working', { ...keyed('k1'), 'if-match': '"0"' })).status).toBe(422);
    expect((await n3.get<EntityBody>('/entities/keyed-1')).body).toMatchObject({ state: 'finalized', version: 2 });

    for (const bad of ['"unterminated', '""', '', `"${'x'.repeat(256)}"`, 'has space', '"a", "b"', '"a";p=1', '"é"']) {
      const answer = await put(n1, 'working', { 'idempotency-key': bad });
      expect(answer.status, bad).toBe(400);
      expect(answer.body.error, bad).toMatch(/Idempotency-Key/);
      expect(answer.headers.get('content-type')).toMatch(/^application\/json/);
    }
    expect((await put(n1, 'working', { 'idempotency-key': `"${'x'.repeat(255)}"` })).status).toBe(200);
    // A precondition failure changed nothing and is not remembered: its retry is evaluated again.
    const refused = await put(n2, 'working', { ...keyed('cas'), 'if-match': '"2"' });
    expect(refused.status).toBe(412);
    const current = (await n2.get<EntityBody>('/entities/keyed-1')).body.version;
    const applied = await put(n2, 'finalized', { ...keyed('cas-2'), 'if-match': `"${current}"` });
    expect(applied.status).toBe(200);
    expect((await put(n3, 'finalized', { ...keyed('cas-2'), 'if-match': `"${current}"` })).body).toEqual(applied.body);
  });

  it('teams: a retried join or leave is replayed; the key with another team answers 422', async () => {
    const user = `u-${backend}`;
    const version = async () =>
      ((await n1.call('teams.user', user, 'team', undefined)) as { teamId: string | null; version: number }).version;
    const join = (node: ClusterNode, teamId: string, key: string) =>
      node.put(`/users/${user}/team`, { teamId }, keyed(key));
    expect(await join(n1, 'red', 'j1')).toMatchObject({ status: 200, body: { userId: user, teamId: 'red' } });
    expect(await version()).toBe(1);
    const left = await n2.request('DELETE', `/users/${user}/team`, { headers: keyed('l1') });
    expect(left).toMatchObject({ status: 200, body: { userId: user, teamId: null } });
    expect(await version()).toBe(2);
    // Retries of both: the same answers, no new event (a plain re-join would append a third).
    expect(await join(n3, 'red', 'j1')).toMatchObject({ status: 200, body: { userId: user, teamId: 'red' } });
    expect(await n1.request('DELETE', `/users/${user}/team`, { headers: keyed('l1') })).toMatchObject({
      status: 200,
      body: { teamId: null },
    });
    expect(await version()).toBe(2);
    expect((await n2.get(`/users/${user}/team`)).body).toEqual({ userId: user, teamId: null });
    const reused = await join(n2, 'blue', 'j1');
    expect(reused).toMatchObject({ status: 422, body: { code: 'IDEMPOTENCY_KEY_REUSED' } });
    expect((await n1.put(`/users/${user}/team`, { teamId: 'blue' }, { 'idempotency-key': '"' })).status).toBe(400);
    expect(await version()).toBe(2);
  });

  it('accounts: a retried signup answers the same 201, a retried login the same session; logout twice the same', async () => {
    const username = `ada-${backend}`;
    const signup = (node: ClusterNode, password: string, key: string) =>
      node.post('/signup', { username, password }, keyed(key));
    const created = await signup(n1, PASSWORD, 's1');
    expect(created).toMatchObject({ status: 201, body: { username } });
    // Every node's cache knows the name by now; without the key a retry would be "taken".
    expect((await n2.post('/signup', { username, password: PASSWORD })).status).toBe(409);
    expect(await signup(n2, PASSWORD, 's1')).toMatchObject({ status: 201, body: { username } });
    expect(await signup(n3, `${PASSWORD}!`, 's1')).toMatchObject({
      status: 422,
      body: { code: 'IDEMPOTENCY_KEY_REUSED' },
    });
    expect((await signup(n3, PASSWORD, 's2')).status).toBe(409);

    const login = (node: ClusterNode, key: string, password = PASSWORD) =>
      node.post('/login', { username, password }, keyed(key));
    const first = await login(n1, 'l1');
    const second = await login(n3, 'l1');
    expect(first.status).toBe(200);
    expect(second.status).toBe(200);
    const cookie = (result: HttpResult) => (result.headers.get('set-cookie') ?? '').split(';')[0]!;
    expect(cookie(second)).toBe(cookie(first));
    expect((await login(n2, 'l1', 'wrong password')).status).toBe(401);
    expect(cookie(await login(n2, 'l2'))).not.toBe(cookie(first));
    expect((await n2.get('/me', { cookie: cookie(first) })).body).toEqual({ username });

    const logout = (node: ClusterNode) =>
      node.request('POST', '/logout', { headers: { cookie: cookie(first), ...keyed('out') } });
    const out = await logout(n1);
    expect(out).toMatchObject({ status: 200, body: { loggedOut: true } });
    expect(await logout(n2)).toMatchObject({ status: out.status, body: out.body });
    expect((await n3.get('/me', { cookie: cookie(first) })).status).toBe(401);
    expect((await n1.request('POST', '/logout', { headers: { 'idempotency-key': '"x' } })).status).toBe(400);
    expect((await n1.post('/login', { username, password: PASSWORD }, { 'idempotency-key': '' })).status).toBe(400);
  });

  it('1,000 keyed PUTs on one entity, its owner killed and restarted mid-flight, failures retried: version 1,000', {
    timeout: 120_000,
  }, async () => {
    const CALLS = 1000;
    const IN_FLIGHT = 50;
    const KILL_AFTER = 250;
    const owner = n3;
    const callers = [n1, n2];
    const id = await idOwnedBy(n1, 'entity-state', owner.name, `hot-${backend}-`);
    const bodies = new Map<string, EntityBody>();
    const failures: Record<string, number> = {};
    let acknowledged = 0;
    let disrupted: Promise<void> | null = null;
    let next = 0;
    const worker = async (w: number) => {
      while (next < CALLS) {
        const i = next++;
        const key = `put-${i}`;
        const state = STATES[i % STATES.length]!;
        for (let attempt = 1; ; attempt++) {
          const via = callers[(w + attempt) % callers.length]!;
          let result: HttpResult<EntityBody> | null = null;
          try {
            result = await via.put<EntityBody>(`/entities/${id}`, { state }, keyed(key));
          } catch (error) {
            failures['connection'] = (failures['connection'] ?? 0) + 1;
            if (attempt > 60) throw error;
          }
          if (result?.status === 200) {
            bodies.set(key, result.body);
            break;
          }
          if (result !== null) {
            if (![503, 504].includes(result.status)) {
              throw new Error(`${key}: unexpected ${result.status} ${JSON.stringify(result.body)}`);
            }
            failures[result.status] = (failures[result.status] ?? 0) + 1;
          }
          if (attempt > 60) throw new Error(`${key}: still failing after 60 attempts`);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        if (++acknowledged === KILL_AFTER) {
          disrupted = (async () => {
            await owner.kill();
            await owner.restart();
          })();
        }
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, (_, w) => worker(w)));
    await disrupted;

    const failed = Object.values(failures).reduce((a, b) => a + b, 0);
    console.log(
      `[${backend}] ${CALLS} keyed PUTs, owner killed after ${KILL_AFTER} and restarted: ${failed} failed attempts retried ${JSON.stringify(failures)}`,
    );
    expect(failed).toBeGreaterThan(0);
    expect(bodies.size).toBe(CALLS);
    // Each answer carries its own change's version: 1 … 1,000, each exactly once.
    expect([...bodies.values()].map((b) => b.version).sort((a, b) => a - b)).toEqual(
      Array.from({ length: CALLS }, (_, i) => i + 1),
    );
    for (const node of cluster.nodes) {
      const { body } = await node.get<EntityBody>(`/entities/${id}`);
      expect(body.version).toBe(CALLS);
    }
    // Retrying an applied key replays its first answer, whichever node and owner answers.
    for (const key of ['put-0', `put-${KILL_AFTER}`, `put-${CALLS - 1}`]) {
      const i = Number(key.slice(4));
      const again = await n3.put<EntityBody>(`/entities/${id}`, { state: STATES[i % STATES.length] }, keyed(key));
      expect(again.status).toBe(200);
      expect(again.body).toEqual(bodies.get(key));
    }
    expect((await n1.get<EntityBody>(`/entities/${id}`)).body.version).toBe(CALLS);
  });
});
