/**
 * The accounts application (examples/accounts) through real `concord node` processes started
 * by LocalCluster, on SQLite and PostgreSQL: signup/login/me/logout across nodes; a session ends
 * everywhere when logout answers (200 times, also with a node partitioned away); login
 * throttling per username and per address across all nodes; unknown users cost a password
 * check too; cache convergence after a partition; bad input; concurrent signups of one name.
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
const login = (node: ClusterNode, username: string, password = PASSWORD, from?: string) =>
  node.post('/login', { username, password }, from === undefined ? undefined : { 'x-forwarded-for': from });
const me = (node: ClusterNode, cookie: string) => node.get('/me', { cookie });
const logout = (node: ClusterNode, cookie: string) => node.request('POST', '/logout', { headers: { cookie } });

/** Per-address limit in these clusters (the default, 100, would make the test slow). */
const PER_ADDRESS = 20;

let addressCounter = 0;
/** A fresh client address (the nodes trust X-Forwarded-For from 127.0.0.1 here). */
function freshAddress(): string {
  addressCounter++;
  return `198.51.${Math.floor(addressCounter / 250)}.${(addressCounter % 250) + 1}`;
}

/** Logs in, retrying what is certainly not applied (503) or unknown (504) like a client. */
async function loginRetrying(node: ClusterNode, username: string): Promise<string> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const answer = await login(node, username, PASSWORD, '127.0.0.1');
    if (answer.status === 200) return cookieOf(answer);
    if ((answer.status !== 503 && answer.status !== 504) || Date.now() > deadline) {
      throw new Error(`login of ${username} on ${node.name}: ${answer.status} ${JSON.stringify(answer.body)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Runs `fn` over `items`, `width` at a time. */
async function inBatches<T, R>(items: T[], width: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += width) {
    out.push(...(await Promise.all(items.slice(i, i + width).map((item, j) => fn(item, i + j)))));
  }
  return out;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

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

/**
 * A fresh username whose account, sessions and throttle entities are all owned by one of
 * `owners` (per n1's shard map).
 */
async function usernameOwnedBy(cluster: LocalCluster, owners: string[], prefix: string): Promise<string> {
  const map = (await cluster.node('n1').get<ClusterBody>('/cluster')).body.shards.map;
  const owned = (kind: string, id: string) => owners.includes(map[shardOf(kind, id, map.length)] ?? '');
  for (let i = 0; i < 100_000; i++) {
    const name = `${prefix}${i}`;
    if (owned('account', name) && owned('user-sessions', name) && owned('login-throttle', `user:${name}`)) return name;
  }
  throw new Error(`no shard owned by ${owners.join(',')}`);
}

/** A client address whose throttle entity is owned by one of `owners`. */
async function addressOwnedBy(cluster: LocalCluster, owners: string[]): Promise<string> {
  const map = (await cluster.node('n1').get<ClusterBody>('/cluster')).body.shards.map;
  for (;;) {
    const address = freshAddress();
    if (owners.includes(map[shardOf('login-throttle', `addr:${address}`, map.length)] ?? '')) return address;
  }
}

describe.each(backends)('accounts app on %s', (backend: Backend) => {
  let cluster: LocalCluster;
  let n1: ClusterNode;
  let n2: ClusterNode;
  let n3: ClusterNode;

  beforeAll(async () => {
    cluster = await LocalCluster.start({
      nodes: 3,
      store: await freshStoreUrl(backend),
      env: { CONCORD_TRUST_PROXY: '127.0.0.1', CONCORD_LOGIN_MAX_FAILURES_PER_ADDRESS: String(PER_ADDRESS) },
    });
    [n1, n2, n3] = cluster.nodes as [ClusterNode, ClusterNode, ClusterNode];
    await waitSettled(cluster);
  });

  afterAll(async () => {
    await cluster?.destroy();
  });

  it('signup on n1, login on n2 and n3; a cookie from n1 works on n3; logout on n1 ends it everywhere at once', async () => {
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

    const out = await logout(n1, cookie);
    expect(out.status).toBe(200);
    expect(out.body).toEqual({ loggedOut: true });
    // No sleep: the session ended at its owner before logout answered.
    for (const node of [n2, n3, n1]) expect((await me(node, cookie)).status).toBe(401);
    // Logging out again is fine, and still names the session.
    expect((await logout(n2, cookie)).body).toEqual({ loggedOut: true });
  });

  it('logout, then /me on every other node at once: 401, 200 times across the 3 nodes', async () => {
    const nodes = [n1, n2, n3];
    const users = Array.from({ length: 10 }, (_, i) => `many${i}`);
    for (const user of users) expect((await signup(nodes[users.indexOf(user) % 3]!, user)).status).toBe(201);
    const cookies = await inBatches(
      Array.from({ length: 200 }, (_, i) => i),
      8,
      (i) => loginRetrying(nodes[i % 3]!, users[i % users.length]!),
    );
    const latencies: number[] = [];
    for (const [i, cookie] of cookies.entries()) {
      const at = nodes[i % 3]!;
      const started = performance.now();
      const out = await logout(at, cookie);
      latencies.push(performance.now() - started);
      expect(out.status, JSON.stringify(out.body)).toBe(200);
      const others = nodes.filter((node) => node !== at);
      const answers = await Promise.all(others.map((node) => me(node, cookie)));
      expect(answers.map((a) => a.status)).toEqual([401, 401]);
    }
    process.stdout.write(
      `[accounts ${backend}] logout latency over 200: p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${percentile(latencies, 99).toFixed(1)} ms\n`,
    );
  });

  // The partitioned variant runs on PostgreSQL only, to keep CI inside its time (the session
  // cache's invalidation is the same code on both stores; the plain variant above runs on both).
  if (backend === 'postgres')
    it('the same with n3 partitioned away: every serving node answers 401, and n3 never 200', async () => {
      const users = await Promise.all(
        Array.from({ length: 6 }, (_, i) => usernameOwnedBy(cluster, ['n1', 'n2', 'n3'], `cut${i}-`)),
      );
      for (const user of users) expect((await signup(n1, user)).status).toBe(201);
      // Some sessions made before the cut, so that n3 (or its cache, were there one) knew them.
      const early = await inBatches(
        Array.from({ length: 20 }, (_, i) => i),
        8,
        (i) => loginRetrying([n1, n2, n3][i % 3]!, users[i % users.length]!),
      );
      await cluster.partition(['n3'], ['n1', 'n2']);
      try {
        const late = await inBatches(
          Array.from({ length: 180 }, (_, i) => i),
          8,
          (i) => loginRetrying([n1, n2][i % 2]!, users[i % users.length]!),
        );
        const n3Answers = new Map<number, number>();
        for (const [i, cookie] of [...early, ...late].entries()) {
          const at = [n1, n2][i % 2]!;
          // 503 (not applied) or 504 (unknown): retried, as a client would — logout is idempotent —
          // until the session's owner (failed over if it was n3) answers.
          let out = await logout(at, cookie);
          for (let tries = 0; (out.status === 503 || out.status === 504) && tries < 100; tries++) {
            await new Promise((resolve) => setTimeout(resolve, 100));
            out = await logout(at, cookie);
          }
          expect(out.status, JSON.stringify(out.body)).toBe(200);
          const [other, cut] = await Promise.all([me(at === n1 ? n2 : n1, cookie), me(n3, cookie)]);
          expect(other.status).toBe(401);
          expect(cut.status).not.toBe(200);
          n3Answers.set(cut.status, (n3Answers.get(cut.status) ?? 0) + 1);
        }
        // n3 cannot reach the sessions' owners (or, evicted, serves nothing): it refuses, it does not guess.
        expect([...n3Answers.keys()].every((status) => status === 503 || status === 504 || status === 401)).toBe(true);
      } finally {
        await cluster.heal();
      }
      await waitSettled(cluster);
    });

  it('login throttling per username holds across all nodes: 429 with Retry-After after 10 failures', async () => {
    expect((await signup(n1, 'mallory-target')).status).toBe(201);
    const address = freshAddress();
    const nodes = [n1, n2, n3];
    for (let i = 0; i < 10; i++) {
      // Spread over every node, each from another address: only the username's counter adds up.
      const answer = await login(nodes[i % 3]!, 'mallory-target', 'wrong password', freshAddress());
      expect(answer.status, `attempt ${i + 1}`).toBe(401);
    }
    for (const node of nodes) {
      const refused = await login(node, 'mallory-target', 'wrong password', address);
      expect(refused.status).toBe(429);
      expect(refused.body.error).toMatch(/too many failed logins for this username/);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(800);
      // The right password does not get through either while the username is throttled.
      expect((await login(node, 'mallory-target', PASSWORD, freshAddress())).status).toBe(429);
    }
    // Other users are not affected.
    expect((await signup(n2, 'innocent')).status).toBe(201);
    expect((await login(n3, 'innocent', PASSWORD, address)).status).toBe(200);
  });

  it('login throttling per client address holds across all nodes, whatever the usernames', async () => {
    const attacker = freshAddress();
    const nodes = [n1, n2, n3];
    for (let i = 0; i < PER_ADDRESS; i++) {
      const answer = await login(nodes[i % 3]!, `nobody${i}`, 'guess', attacker);
      expect(answer.status, `attempt ${i + 1}`).toBe(401);
    }
    for (const node of nodes) {
      const refused = await login(node, 'nobody-else', 'guess', attacker);
      expect(refused.status).toBe(429);
      expect(refused.body.error).toMatch(/from this address/);
      expect(refused.headers.get('retry-after')).toMatch(/^\d+$/);
    }
    // Another address is not affected.
    expect((await login(n1, 'nobody-else', 'guess', freshAddress())).status).toBe(401);
  });

  it('an unknown user costs a password check too (no timing shortcut)', async () => {
    expect((await signup(n1, 'timed')).status).toBe(201);
    const time = async (username: string) => {
      const started = performance.now();
      const answer = await login(n1, username, 'not the password', freshAddress());
      expect(answer.status).toBe(401);
      return performance.now() - started;
    };
    const known: number[] = [];
    const unknown: number[] = [];
    for (let i = 0; i < 8; i++) {
      known.push(await time('timed'));
      unknown.push(await time(`ghost${i}`));
    }
    const ratio = percentile(unknown, 50) / percentile(known, 50);
    // A shortcut for unknown names would answer in ~1 ms instead of one scrypt (tens of ms).
    expect(ratio).toBeGreaterThan(0.33);
    expect(ratio).toBeLessThan(3);
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

  it('partition n3 (store still reachable): a user who signed up meanwhile reaches n3’s cache after the heal', async () => {
    // Entities owned on the n1/n2 side: served throughout the partition.
    const dave = await usernameOwnedBy(cluster, ['n1', 'n2'], 'dave');
    const address = await addressOwnedBy(cluster, ['n1', 'n2']);
    await cluster.partition(['n3'], ['n1', 'n2']);
    try {
      expect((await signup(n1, dave)).status).toBe(201);
    } finally {
      await cluster.heal();
    }
    await waitSettled(cluster);
    // n3 never read dave: it can only know him from the replicated cache. Cut its store so a
    // login cannot read through, and wait for anti-entropy to bring the entry.
    await cluster.eventually(
      async () => {
        await cluster.cutStore(n3);
        try {
          const answer = await login(n3, dave, PASSWORD, address);
          if (answer.status !== 200) throw new Error(`login on n3 without its store: ${answer.status}`);
        } finally {
          await cluster.restoreStore(n3);
        }
      },
      { timeout: 10_000, interval: 300 },
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
      await cluster.destroy();
    }
  });
});
