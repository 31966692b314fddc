/**
 * Accounts sessions: logout latency and `/me` latency on a 3-node LocalCluster, and whether any
 * `/me` right after a logout still answers 200.
 *   node dist/bench/sessions.js [--root DIR] [--store URL]
 * `--root` is the repository root of the build to measure (default: this one), so that two builds
 * (before and after a change) can be compared with the same script. 200 logins (10 users, 8 at a
 * time), 600 `/me` round-robin over the nodes, then 200 logouts round-robin, each followed at once
 * by `/me` on the two other nodes.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

interface Node {
  name: string;
  post(path: string, body: unknown): Promise<{ status: number; headers: Headers }>;
  get(path: string, headers?: Record<string, string>): Promise<{ status: number }>;
  request(method: string, path: string, options: { headers?: Record<string, string> }): Promise<{ status: number }>;
}
interface Cluster {
  nodes: Node[];
  kill(): Promise<void>;
  /** Kill and delete the cluster's directory (an older tree, --root, may not have it). */
  destroy?(): Promise<void>;
}

const { values } = parseArgs({ options: { root: { type: 'string' }, store: { type: 'string' } } });
const root = values.root ?? fileURLToPath(new URL('../..', import.meta.url));
const { LocalCluster } = (await import(join(root, 'dist/src/testing/local-cluster.js'))) as {
  LocalCluster: { start(options: Record<string, unknown>): Promise<Cluster> };
};
const PASSWORD = 'correct horse battery';
const cluster = await LocalCluster.start({ nodes: 3, ...(values.store ? { store: values.store } : {}) });
const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
try {
  const nodes = cluster.nodes;
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const users = Array.from({ length: 10 }, (_, i) => `lat${i}`);
  for (const [i, user] of users.entries()) await nodes[i % 3]!.post('/signup', { username: user, password: PASSWORD });
  const cookies: string[] = [];
  for (let i = 0; i < 200; i += 8) {
    const batch = await Promise.all(
      Array.from({ length: 8 }, (_, j) =>
        nodes[(i + j) % 3]!.post('/login', { username: users[(i + j) % 10], password: PASSWORD }),
      ),
    );
    for (const answer of batch) cookies.push((answer.headers.get('set-cookie') ?? '').split(';')[0]!);
  }
  const me: number[] = [];
  for (let i = 0; i < 600; i++) {
    const started = performance.now();
    const answer = await nodes[i % 3]!.get('/me', { cookie: cookies[i % cookies.length]! });
    me.push(performance.now() - started);
    if (answer.status !== 200) throw new Error(`/me answered ${answer.status}`);
  }
  const logout: number[] = [];
  let stale = 0;
  for (const [i, cookie] of cookies.entries()) {
    const at = nodes[i % 3]!;
    const started = performance.now();
    const out = await at.request('POST', '/logout', { headers: { cookie } });
    logout.push(performance.now() - started);
    if (out.status !== 200) throw new Error(`logout answered ${out.status}`);
    const answers = await Promise.all(nodes.filter((n) => n !== at).map((n) => n.get('/me', { cookie })));
    stale += answers.filter((a) => a.status === 200).length;
  }
  me.sort((a, b) => a - b);
  logout.sort((a, b) => a - b);
  const ms = (v: number) => `${v.toFixed(2)} ms`;
  process.stdout.write(
    `${root} (${values.store ?? 'sqlite'}): logout p50 ${ms(percentile(logout, 0.5))}, p90 ${ms(percentile(logout, 0.9))}, ` +
      `p99 ${ms(percentile(logout, 0.99))}; /me p50 ${ms(percentile(me, 0.5))}, p99 ${ms(percentile(me, 0.99))}; ` +
      `/me answering 200 right after a logout: ${stale} of ${cookies.length * 2}\n`,
  );
} finally {
  await (cluster.destroy?.() ?? cluster.kill());
}
