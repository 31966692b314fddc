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
        CONCORD_SECRET: 'env-secret',
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
      env: { CONCORD_NODE_NAME: 'from-env', DATABASE_URL: `sqlite:${join(dir, 'db.db')}`, CONCORD_SECRET: 's' },
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

  it('reports missing and invalid flags', async () => {
    const env = { CONCORD_SECRET: 's' };
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
      const env = { CONCORD_SECRET: 's', CONCORD_STORE: `sqlite:${join(tempDir('port-'), 'x.db')}` };
      await failsWith(runCli(['node', '--name', 'a', '--http-port', String(port)], { env }), 'already in use');
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
    const unreachable = `postgres://nobody:secret@127.0.0.1:${deadPort}/none`;
    const run = runCli(['node', '--name', 'a', '--http-port', String(port), '--store', unreachable], {
      env: { CONCORD_SECRET: 's' },
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
