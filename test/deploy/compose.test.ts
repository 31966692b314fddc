/**
 * The deploy files, without a Docker daemon: the compose file's `node` service is started the way
 * `docker compose up --scale node=3` would start it — the image's entrypoint and environment
 * (from the Dockerfile) with the service's environment — as three processes against the test
 * PostgreSQL server, and the README's walk-through runs against them. What a container would
 * give each replica is given explicitly, and nothing else is changed:
 * - its own hostname and IP address (`hostname`, `hostname -i`: a fake `hostname` on its PATH
 *   answering a container id and 127.0.0.1);
 * - its own ports (the container's 8080 and 7946 are free ports here: the processes share one
 *   network namespace) — the walk-through's localhost:4001-4003 are the published range;
 * - the programs the image installs on its PATH (`concord`, `concord-entrypoint`) and no init;
 * - the store: the service's URL points at the `postgres` service; here at a fresh database
 *   of the test server (the service's user, password and database are checked against it).
 * Also: the Kubernetes example's probes, grace period, secret and per-pod identity.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { HARD_EXIT_MS } from '../../src/cli/run-node.js';
import { freePorts } from '../../src/testing/local-cluster.js';
import { CLI, type CliNode, eventually, REPO, request, waitSettled } from '../cli/harness.js';
import { createTestDatabase } from '../support/pg.js';
import { tempDir } from '../support/tmp.js';
import { runWalkthrough } from '../support/walkthrough.js';

interface DockerfileStage {
  from: string;
  env: Record<string, string>;
  user?: string;
  workdir?: string;
  entrypoint?: string[];
  healthcheck?: string[];
  copies: { from?: string; source: string; destination: string }[];
}

/** The stages of a Dockerfile (continuation lines joined, comments dropped). */
function parseDockerfile(text: string): DockerfileStage[] {
  const lines = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'));
  const stages: DockerfileStage[] = [];
  for (const line of lines) {
    const [, instruction = '', rest = ''] = /^(\S+)\s+(.*)$/.exec(line) ?? [];
    const stage = stages.at(-1);
    switch (instruction.toUpperCase()) {
      case 'FROM':
        stages.push({ from: rest, env: {}, copies: [] });
        break;
      case 'ENV':
        for (const match of rest.matchAll(/(\w+)=("[^"]*"|\S+)/g))
          stage!.env[match[1]!] = match[2]!.replace(/^"|"$/g, '');
        break;
      case 'USER':
        stage!.user = rest;
        break;
      case 'WORKDIR':
        stage!.workdir = rest;
        break;
      case 'ENTRYPOINT':
        stage!.entrypoint = JSON.parse(rest) as string[];
        break;
      case 'HEALTHCHECK':
        stage!.healthcheck = JSON.parse(rest.slice(rest.indexOf('CMD ') + 4)) as string[];
        break;
      case 'COPY': {
        const words = rest.split(/\s+/);
        const from = words[0]!.startsWith('--from=') ? words.shift()!.slice('--from='.length) : undefined;
        stage!.copies.push({ from, source: words[0]!, destination: words[1]! });
        break;
      }
    }
  }
  return stages;
}

/** Compose's variable interpolation: $$, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}. */
function interpolate(value: string, vars: Record<string, string | undefined>): string {
  return value.replace(/\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)/g, (whole, name, op, arg, bare) => {
    if (whole === '$$') return '$';
    if (bare) return vars[bare] ?? '';
    const current = vars[name];
    const missing = op?.startsWith(':') ? !current : current === undefined;
    if (op?.endsWith('-') && missing) return arg;
    if (op?.endsWith('?') && missing) throw new Error(`compose: ${name}: ${arg}`);
    return current ?? '';
  });
}

function environmentOf(service: { environment?: Record<string, unknown> | string[] }): Record<string, string> {
  const env = service.environment ?? {};
  if (Array.isArray(env)) {
    return Object.fromEntries(env.map((item) => [item.slice(0, item.indexOf('=')), item.slice(item.indexOf('=') + 1)]));
  }
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)]));
}

interface Compose {
  services: Record<
    string,
    {
      environment?: Record<string, unknown> | string[];
      command?: string | string[];
      ports?: string[];
      stop_grace_period?: string;
      depends_on?: Record<string, unknown>;
    }
  >;
}

const dockerfile = parseDockerfile(readFileSync(join(REPO, 'Dockerfile'), 'utf8'));
const image = dockerfile.at(-1)!;
const compose = parse(readFileSync(join(REPO, 'docker-compose.yml'), 'utf8')) as Compose;

function seconds(duration: string): number {
  const match = /^(\d+)(ms|s|m)$/.exec(duration);
  if (!match) throw new Error(`duration ${duration}`);
  return Number(match[1]) * (match[2] === 'ms' ? 0.001 : match[2] === 'm' ? 60 : 1);
}

describe('Dockerfile', () => {
  it('multi-stage, non-root, concord node under tini, health check on /readyz', () => {
    expect(dockerfile.length).toBeGreaterThanOrEqual(2);
    expect(image.user).toBeDefined();
    expect(['root', '0']).not.toContain(image.user);
    expect(image.entrypoint?.slice(0, 2)).toEqual(['/usr/bin/tini', '--']);
    expect(image.entrypoint?.at(-1)).toBe('node');
    expect(image.healthcheck?.join(' ')).toContain('/readyz');
    // Nothing of the build stage but its output: no compilers, no dev dependencies.
    expect(image.copies.filter((c) => c.from).map((c) => c.source)).toEqual([
      '/src/package.json',
      '/src/node_modules',
      '/src/dist',
    ]);
  });
});

describe('docker-compose.yml, scaled to 3, as processes', () => {
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });

  it('the replicas find each other through the store and answer the README walk-through', async () => {
    const node = compose.services['node']!;
    const postgres = compose.services['postgres']!;
    const secret = 'compose-test-secret-0123456789abcdef';
    const vars = { CONCORD_SECRET: secret };
    // Compose refuses to start without a secret.
    expect(() => interpolate(String(environmentOf(node)['CONCORD_SECRET']), {})).toThrow(/CONCORD_SECRET/);
    const serviceEnv = Object.fromEntries(
      Object.entries(environmentOf(node)).map(([k, v]) => [k, interpolate(v, vars)]),
    );
    expect(serviceEnv['CONCORD_SECRET']).toBe(secret);
    expect(node.depends_on).toHaveProperty('postgres');
    expect(seconds(node.stop_grace_period ?? '10s') * 1000).toBeGreaterThan(HARD_EXIT_MS);

    // The store URL names the postgres service with its own credentials and database.
    const store = new URL(serviceEnv['CONCORD_STORE']!);
    const pgEnv = environmentOf(postgres);
    expect(store.hostname).toBe('postgres');
    expect([store.username, store.password, store.pathname.slice(1)]).toEqual([
      pgEnv['POSTGRES_USER'],
      pgEnv['POSTGRES_PASSWORD'],
      pgEnv['POSTGRES_DB'],
    ]);
    serviceEnv['CONCORD_STORE'] = await createTestDatabase();

    // One published host port per replica: "4001-4003:8080".
    const [published, containerPort] = (node.ports ?? [])[0]!.split(':');
    const [first, last = first] = published!.split('-').map(Number);
    expect(last! - first! + 1).toBeGreaterThanOrEqual(3);
    expect(containerPort).toBe(image.env['CONCORD_HTTP_PORT']);

    const entrypoint = image.entrypoint!.slice(2); // without the init
    const command = [...entrypoint, ...[node.command ?? []].flat()];
    const ports = await freePorts(6);
    const baseEnv: NodeJS.ProcessEnv = {};
    for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('CONCORD_')) baseEnv[key] = value;

    const replicas = [1, 2, 3].map((i) => {
      const hostname = `c0c0a000000${i}`;
      const bin = tempDir('compose-bin-');
      writeFileSync(
        join(bin, 'hostname'),
        `#!/bin/sh\nif [ "\${1:-}" = "-i" ]; then echo "127.0.0.1 ::1"; else echo "${hostname}"; fi\n`,
      );
      writeFileSync(join(bin, 'concord'), `#!/bin/sh\nexec "${process.execPath}" "${CLI}" "$@"\n`);
      for (const file of ['hostname', 'concord']) chmodSync(join(bin, file), 0o755);
      for (const copy of image.copies.filter((c) => !c.from && c.destination.startsWith('/usr/local/bin/'))) {
        symlinkSync(join(REPO, copy.source), join(bin, copy.destination.slice('/usr/local/bin/'.length)));
      }
      const env: NodeJS.ProcessEnv = {
        ...baseEnv,
        ...image.env,
        ...serviceEnv,
        CONCORD_HTTP_PORT: String(ports[2 * i - 2]),
        CONCORD_CLUSTER_PORT: String(ports[2 * i - 1]),
        HOSTNAME: hostname,
        PATH: `${bin}:${process.env['PATH']}`,
      };
      let log = '';
      const child = spawn(command[0]!, command.slice(1), { env, cwd: tempDir('compose-data-'), stdio: 'pipe' });
      children.push(child);
      child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (log += chunk));
      child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (log += chunk));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      return {
        hostname,
        env,
        child,
        exited,
        logs: () => log,
        name: hostname,
        url: `http://127.0.0.1:${env['CONCORD_HTTP_PORT']}`,
      };
    });

    // Healthy by the image's own health check.
    await Promise.all(
      replicas.map((replica) =>
        eventually(async () => {
          if (replica.child.exitCode !== null) throw new Error(`${replica.hostname} exited:\n${replica.logs()}`);
          const check = image.healthcheck!;
          const probe = spawn(check[0]!, check.slice(1), { env: replica.env, stdio: 'ignore' });
          const code = await new Promise<number | null>((resolve) => probe.once('exit', resolve));
          if (code !== 0) throw new Error(`${replica.hostname} unhealthy:\n${replica.logs()}`);
        }, 30_000),
      ),
    );
    await waitSettled(replicas as unknown as CliNode[]);
    // Named after their hostnames, reached at their advertised IP: found through the store.
    const view = await request<{ members: { name: string; address: string; httpAddress: string }[] }>(
      replicas[0]!,
      'GET',
      '/cluster',
    );
    expect(view.body.members.map((m) => m.name).sort()).toEqual(replicas.map((r) => r.hostname));
    for (const member of view.body.members) {
      expect(member.address).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(member.httpAddress).toBe(replicas.find((r) => r.hostname === member.name)!.url);
    }

    expect(await runWalkthrough(replicas)).toBeGreaterThan(10);

    // `docker compose stop`: SIGTERM, then the grace period.
    for (const replica of replicas) replica.child.kill('SIGTERM');
    const codes = await Promise.all(replicas.map((r) => r.exited));
    expect(codes, replicas.map((r) => r.logs()).join('\n')).toEqual([0, 0, 0]);
  }, 60_000);
});

describe('Kubernetes example', () => {
  const docs = parseAllDocuments(readFileSync(join(REPO, 'deploy/kubernetes/concord.yaml'), 'utf8')).map(
    (doc) =>
      doc.toJS() as { kind: string; metadata: { name: string }; spec?: Record<string, unknown> } & Record<
        string,
        unknown
      >,
  );
  const of = (kind: string) => docs.find((d) => d.kind === kind)!;

  it('a Deployment with probes, a grace period above the graceful-stop bound, the secret, and per-pod identity', () => {
    const deployment = of('Deployment') as unknown as {
      spec: {
        replicas: number;
        template: {
          spec: {
            terminationGracePeriodSeconds: number;
            containers: {
              env: { name: string; value?: string; valueFrom?: Record<string, Record<string, string>> }[];
              readinessProbe: { httpGet: { path: string } };
              livenessProbe: { httpGet: { path: string } };
            }[];
          };
        };
      };
    };
    const pod = deployment.spec.template.spec;
    const container = pod.containers[0]!;
    expect(deployment.spec.replicas).toBeGreaterThanOrEqual(3);
    expect(pod.terminationGracePeriodSeconds * 1000).toBeGreaterThan(HARD_EXIT_MS);
    expect(container.readinessProbe.httpGet.path).toBe('/readyz');
    expect(container.livenessProbe.httpGet.path).toBe('/healthz');
    const env = Object.fromEntries(container.env.map((e) => [e.name, e]));
    expect(env['CONCORD_SECRET']?.valueFrom?.['secretKeyRef']).toEqual({ name: 'concord', key: 'CONCORD_SECRET' });
    expect(env['CONCORD_NODE_NAME']?.valueFrom?.['fieldRef']?.['fieldPath']).toBe('metadata.name');
    expect(env['CONCORD_ADVERTISE_HOST']?.valueFrom?.['fieldRef']?.['fieldPath']).toBe('status.podIP');
    // The drain delay ends well inside the grace period.
    expect(Number(env['CONCORD_DRAIN_DELAY_MS']?.value)).toBeLessThan(HARD_EXIT_MS);
    const secret = of('Secret') as unknown as { metadata: { name: string }; stringData: Record<string, string> };
    expect(secret.metadata.name).toBe('concord');
    expect(Object.keys(secret.stringData)).toContain('CONCORD_SECRET');
    // The placeholder is one that concord node refuses (shorter than 16 bytes).
    expect(Buffer.byteLength(secret.stringData['CONCORD_SECRET']!)).toBeLessThan(16);
  });
});
