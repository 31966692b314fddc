/**
 * The accounts application (examples/accounts) through real `concord node` processes started
 * by LocalCluster, on SQLite and PostgreSQL: signup/login/me/logout across nodes, logout
 * ending a session everywhere, read-through during a partition and cache convergence after
 * it, bad input, and concurrent signups of one name.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shardOf } from '../../src/cluster/hash.js';
import { type ClusterNode, type HttpResult, LocalCluster } from '../../src/testing/local-cluster.js';
import { type Backend, backends, freshStoreUrl } from '../support/cluster.js';

const PASSWORD = 'correct horse battery';

interface ClusterBody {
  members: { name: string; status: string }[];
  shards: { map: (string | null)[] };
}

function cookieOf(result: HttpResult): string {
  const header = result.headers.get('set-cookie') ?? '';
  const pair = header.split(';')[0] ?? '';
  if (!pair.startsWith('concord_session=')) throw new Error(`no session cookie in ${JSON.stringify(header)}`);
  return pair;
}

const signup = (node: ClusterNode, username: string, password = PASSWORD) =>
  node.post('/signup', { username, password });
const login = (node: ClusterNode, username: string, password = PASSWORD) => node.post('/login', { username, password });
const me = (node: ClusterNode, cookie: string) => node.get('/me', { cookie });

async function waitSettled(cluster: LocalCluster): Promise<void> {
  await cluster.eventually(
    async () => {
      for (const node of cluster.nodes) {
        const { body } = await node.get<ClusterBody>('/cluster');
        if (body.members.filter((m) => m.status === 'alive').length !== cluster.nodes.length)
          throw new Error('joining');
        if (body.shards.map.some((owner) => owner === null)) throw new Error('shards not settled');
      }
    },
    { timeout: 20_000 },
  );
}

/** A fresh username whose account entity is owned by one of `owners` (per n1's shard map). */
async function usernameOwnedBy(cluster: LocalCluster, owners: string[], prefix: string): Promise<string> {
  const map = (await cluster.node('n1').get<ClusterBody>('/cluster')).body.shards.map;
  for (let i = 0; i < 10_000; i++) {
    const name = `${prefix}${i}`;
    if (owners.includes(map[shardOf('account', name, map.length)] ?? '')) return name;
  }
  throw new Error(`no shard owned by ${owners.join(',')}`);
}

describe.each(backends)('accounts app on %s', (backend: Backend) => {
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
    await cluster?.kill();
  });

  it('signup on n1, login on n2 and n3; a cookie from n1 works on n3; logout on n1 ends it on n2 within 1 s', async () => {
    const created = await signup(n1, 'Alice');
    expect(created.status).toBe(201);
    expect(created.body).toEqual({ username: 'alice' });

    for (const node of [n2, n3]) {
      const result = await login(node, 'alice');
      expect(result.status).toBe(200);
      expect(result.body).toEqual({ username: 'alice' });
      expect((await me(node, cookieOf(result))).body).toEqual({ username: 'alice' });
    }

    const fromN1 = await login(n1, 'ALICE');
    expect(fromN1.status).toBe(200);
    const setCookie = fromN1.headers.get('set-cookie') ?? '';
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Lax/);
    const cookie = cookieOf(fromN1);
    for (const node of [n1, n2, n3]) {
      const answer = await me(node, cookie);
      expect(answer.status).toBe(200);
      expect(answer.body).toEqual({ username: 'alice' });
    }

    const out = await n1.request('POST', '/logout', { headers: { cookie } });
    expect(out.status).toBe(200);
    const loggedOutAt = performance.now();
    await cluster.eventually(
      async () => {
        const answer = await me(n2, cookie);
        if (answer.status !== 401) throw new Error(`n2 still answers ${answer.status}`);
      },
      { timeout: 1000, interval: 10 },
    );
    expect(performance.now() - loggedOutAt).toBeLessThan(1000);
    for (const node of [n1, n3]) expect((await me(node, cookie)).status).toBe(401);
  });

  it('answers bad input with 400, wrong passwords with 401, taken names with 409', async () => {
    const bad: unknown[] = [
      'not json',
      '[]',
      {},
      { username: 'bob' },
      { password: PASSWORD },
      { username: 'b', password: PASSWORD },
      { username: 'x'.repeat(65), password: PASSWORD },
      { username: 'bob smith', password: PASSWORD },
      { username: 'bob', password: 'short' },
      { username: 'bob', password: 'p'.repeat(129) },
      { username: ['bob'], password: PASSWORD },
      { username: 'bob', password: 12345678 },
    ];
    for (const body of bad) {
      const answer = await n2.post('/signup', body);
      expect(answer.status, JSON.stringify(body)).toBe(400);
      expect(typeof answer.body.error).toBe('string');
      expect(JSON.stringify(answer.body)).not.toMatch(/ at .*\.(js|ts):\d+/);
    }
    for (const body of ['{', {}, { username: 'bob' }, { username: 'bob', password: '' }]) {
      expect((await n3.post('/login', body)).status, JSON.stringify(body)).toBe(400);
    }

    expect((await signup(n2, 'bob')).status).toBe(201);
    expect((await login(n3, 'bob', `${PASSWORD}!`)).status).toBe(401);
    expect((await login(n3, 'nobody-here')).status).toBe(401);
    const taken = await signup(n3, 'Bob');
    expect(taken.status).toBe(409);
    expect(taken.body.error).toBe('username is taken');

    expect((await n1.get('/me')).status).toBe(401);
    expect((await me(n1, 'concord_session=forged.AAAA')).status).toBe(401);
    // A real session id with a wrong MAC is refused too.
    const real = await login(n1, 'bob');
    const tampered = cookieOf(real).replace(/\.[^.]*$/, '.x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x9x');
    expect((await me(n1, tampered)).status).toBe(401);
  });

  it('concurrent signups of one name on different nodes: exactly one 201', async () => {
    for (let round = 0; round < 5; round++) {
      const name = `racer${round}`;
      const answers = await Promise.all([signup(n1, name), signup(n2, name), signup(n3, name)]);
      const statuses = answers.map((a) => a.status).sort();
      expect(statuses).toEqual([201, 409, 409]);
      // The password of the one that won is the one that logs in, on every node.
      for (const node of [n1, n2, n3]) expect((await login(node, name)).status).toBe(200);
    }
  });

  it('partition n3 (store still reachable): signup on n1, login on n3 reads through; after heal n3 has the user cached', async () => {
    // Accounts owned on the n1/n2 side: their owner stays reachable from n1.
    const carol = await usernameOwnedBy(cluster, ['n1', 'n2'], 'carol');
    const dave = await usernameOwnedBy(cluster, ['n1', 'n2'], 'dave');
    await cluster.partition(['n3'], ['n1', 'n2']);

    expect((await signup(n1, carol)).status).toBe(201);
    expect((await signup(n1, dave)).status).toBe(201);
    const onN3 = await login(n3, carol);
    expect(onN3.status).toBe(200);
    const carolCookie = cookieOf(onN3);
    expect((await me(n3, carolCookie)).status).toBe(200);

    await cluster.heal();
    // n3 never read dave: it can only know him from the replicated cache. Cut its store so a
    // login cannot read through, and wait for anti-entropy to bring the entry.
    await cluster.eventually(
      async () => {
        await cluster.cutStore(n3);
        try {
          const answer = await login(n3, dave);
          if (answer.status !== 200) throw new Error(`login on n3 without its store: ${answer.status}`);
        } finally {
          await cluster.restoreStore(n3);
        }
      },
      { timeout: 10_000, interval: 300 },
    );
    // And the session made on n3 during the partition reached the other side.
    await cluster.eventually(
      async () => {
        const answer = await me(n1, carolCookie);
        if (answer.status !== 200) throw new Error(`n1 answers ${answer.status}`);
      },
      { timeout: 10_000 },
    );
  });
});

describe('accounts app with --ownership none', () => {
  it('answers 501 with a JSON error', async () => {
    const cluster = await LocalCluster.start({ nodes: 1, args: ['--ownership', 'none'] });
    try {
      const node = cluster.node('n1');
      for (const answer of [await signup(node, 'erin'), await login(node, 'erin'), await node.get('/me')]) {
        expect(answer.status).toBe(501);
        expect(typeof answer.body.error).toBe('string');
      }
    } finally {
      await cluster.kill();
    }
  });
});
