/**
 * `concord node`: flags, their environment equivalents, and clear errors (no stack traces)
 * for a missing secret, missing or bad flags, a taken port and an unreachable store.
 * Also: SIGTERM / SIGINT stop the node gracefully with exit 0.
 */
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../support/tmp.js';
import { type CliNode, freePorts, hasStackTrace, request, runCli, type Spawned, waitReady } from './harness.js';

/** A secret long enough for `concord node` (at least 16 bytes). */
const SECRET = 'a-strong-enough-cluster-secret';

async function failsWith(run: Spawned, ...fragments: string[]): Promise<void> {
  const { code } = await run.exited;
  expect(code).not.toBe(0);
  for (const fragment of fragments) expect(run.stderr()).toContain(fragment);
  expect(hasStackTrace(run.stderr())).toBe(false);
}

describe('concord node', () => {
  it('is configured entirely by environment variables, and SIGINT stops it with exit 0', async () => {
    const [httpPort, clusterPort] = await freePorts(2);
    const dir = tempDir('env-');
    const run = runCli(['node'], {
      env: {
        CONCORD_NODE_NAME: 'from-env',
        CONCORD_HTTP_PORT: String(httpPort),
        CONCORD_CLUSTER_PORT: String(clusterPort),
        CONCORD_HOST: '127.0.0.1',
        CONCORD_STORE: `sqlite:${join(dir, 'env.db')}`,
        DATABASE_URL: `sqlite:${join(dir, 'ignored.db')}`,
        CONCORD_SECRET: SECRET,
      },
    });
    const node: CliNode = Object.assign(run, { name: 'from-env', url: `http://127.0.0.1:${httpPort}` });
    await waitReady(node);
    const cluster = await request<{ self: string; members: { address: string; httpAddress: string }[] }>(
      node,
      'GET',
      '/cluster',
    );
    expect(cluster.body.self).toBe('from-env');
    expect(cluster.body.members[0]).toMatchObject({ address: `127.0.0.1:${clusterPort}`, httpAddress: node.url });
    expect(existsSync(join(dir, 'env.db'))).toBe(true);
    expect(existsSync(join(dir, 'ignored.db'))).toBe(false);
    expect(run.stdout()).toContain(`concord node from-env ready at ${node.url}`);

    run.process.kill('SIGINT');
    expect((await run.exited).code).toBe(0);
  });

  it('flags win over the environment; DATABASE_URL is the store when CONCORD_STORE is not set; SIGTERM exits 0', async () => {
    const [httpPort] = await freePorts(1);
    const dir = tempDir('flags-');
    const run = runCli(['node', '--name', 'from-flag', '--http-port', String(httpPort)], {
      env: { CONCORD_NODE_NAME: 'from-env', DATABASE_URL: `sqlite:${join(dir, 'db.db')}`, CONCORD_SECRET: SECRET },
    });
    const node: CliNode = Object.assign(run, { name: 'from-flag', url: `http://127.0.0.1:${httpPort}` });
    await waitReady(node);
    expect((await request<{ self: string }>(node, 'GET', '/cluster')).body.self).toBe('from-flag');
    expect(existsSync(join(dir, 'db.db'))).toBe(true);
    run.process.kill('SIGTERM');
    expect((await run.exited).code).toBe(0);
  });

  it('refuses to start without CONCORD_SECRET, with a clear message', async () => {
    const [port] = await freePorts(1);
    await failsWith(runCli(['node', '--name', 'a', '--http-port', String(port)]), 'CONCORD_SECRET is not set');
  });

  it('refuses a secret shorter than 16 bytes, saying how to make one, before touching the store', async () => {
    const [port] = await freePorts(1);
    const db = join(tempDir('weak-'), 'weak.db');
    const args = ['node', '--name', 'a', '--http-port', String(port), '--store', `sqlite:${db}`];
    const run = runCli(args, { env: { CONCORD_SECRET: 'fifteen-bytes!!' } });
    await failsWith(run, 'CONCORD_SECRET is too short (15 bytes; at least 16', 'openssl rand -hex 24');
    expect(existsSync(db)).toBe(false);
    // The demo's escape hatch is honoured only for the demo's own children (with a parent to exit with).
    const hatch = runCli(args, { env: { CONCORD_SECRET: 'short', CONCORD_DEMO_ALLOW_WEAK_SECRET: '1' } });
    await failsWith(hatch, 'too short');
  });

  it('refuses a secret other than the cluster’s, and accepts it as CONCORD_SECRET_PREVIOUS', async () => {
    const [port] = await freePorts(1);
    const store = `sqlite:${join(tempDir('mismatch-'), 'c.db')}`;
    const env = (secret: string, previous?: string) => ({
      CONCORD_SECRET: secret,
      CONCORD_STORE: store,
      ...(previous ? { CONCORD_SECRET_PREVIOUS: previous } : {}),
    });
    const args = (name: string) => ['node', '--name', name, '--http-port', String(port)];
    // The first node records the cluster's verifier; it stays after the node stops.
    const first = runCli(args('a'), { env: env(SECRET) });
    await waitReady(Object.assign(first, { name: 'a', url: `http://127.0.0.1:${port}` }));
    first.process.kill('SIGTERM');
    expect((await first.exited).code).toBe(0);

    const OTHER = 'another-strong-cluster-secret';
    const refused = runCli(args('b'), { env: env(OTHER) });
    await failsWith(
      refused,
      "b could not start: this node's cluster secret (CONCORD_SECRET) differs from the secret of the cluster recorded in this store (cluster id ",
      'Every node of a cluster must use the same secret',
      'rotation procedure in the README',
      'refusedJoins in GET /cluster',
    );

    // During a rotation the old secret, given as the previous one, lets the node in.
    const rotating = runCli(args('b'), { env: env(OTHER, SECRET) });
    const node: CliNode = Object.assign(rotating, { name: 'b', url: `http://127.0.0.1:${port}` });
    await waitReady(node);
    const view = await request<{ clusterId: string; refusedJoins: { name: string; reason: string }[] }>(
      node,
      'GET',
      '/cluster',
    );
    expect(refused.stderr()).toContain(view.body.clusterId);
    expect(view.body.refusedJoins).toEqual([
      expect.objectContaining({ name: 'b', reason: expect.stringContaining('secret mismatch') }),
    ]);
    rotating.process.kill('SIGTERM');
    expect((await rotating.exited).code).toBe(0);
  });

  it('reports missing and invalid flags', async () => {
    const env = { CONCORD_SECRET: SECRET };
    await failsWith(runCli(['node', '--http-port', '4000'], { env }), '--name');
    await failsWith(runCli(['node', '--name', 'a'], { env }), '--http-port');
    await failsWith(runCli(['node', '--name', 'a', '--http-port', '99999'], { env }), 'port number');
    await failsWith(runCli(['node', '--name', 'a', '--http-port', 'x'], { env }), 'port number');
    await failsWith(
      runCli(['node', '--name', 'a', '--http-port', '4000', '--ownership', 'some'], { env }),
      'single, none',
    );
    await failsWith(runCli(['node', '--name', 'bad name!', '--http-port', '4000'], { env }), 'node name');
  });

  it('a taken HTTP port or an unreachable store: exit 1 with the reason', async () => {
    const [port, deadPort] = await freePorts(2);
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(port, '127.0.0.1', resolve));
    try {
      const env = { CONCORD_SECRET: SECRET, CONCORD_STORE: `sqlite:${join(tempDir('port-'), 'x.db')}` };
      await failsWith(runCli(['node', '--name', 'a', '--http-port', String(port)], { env }), 'already in use');
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
    const unreachable = `postgres://nobody:secret@127.0.0.1:${deadPort}/none`;
    const run = runCli(['node', '--name', 'a', '--http-port', String(port), '--store', unreachable], {
      env: { CONCORD_SECRET: SECRET },
    });
    await failsWith(run, 'could not start');
    expect(run.stderr()).not.toContain('secret@'); // the password is not printed
  });

  it('concord --help lists every command of the interface', async () => {
    const run = runCli(['--help']);
    expect((await run.exited).code).toBe(0);
    for (const command of ['demo', 'node', 'bench', 'check'])
      expect(run.stdout()).toMatch(new RegExp(`\\n  ${command} `));
  });
});
