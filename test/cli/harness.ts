/**
 * Test harness for the `concord` command: real processes started exactly as a user would
 * (`node dist/src/cli/main.js …`), with their output kept for assertions, and HTTP helpers.
 * Every process a test file starts is killed in afterAll, even when a test failed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';

export const CLI = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));
export const REPO = fileURLToPath(new URL('../..', import.meta.url));

export interface Spawned {
  readonly process: ChildProcess;
  readonly pid: number;
  /** Everything written to stdout / stderr so far. */
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly running: boolean;
}

const spawned: Spawned[] = [];

afterAll(async () => {
  for (const child of spawned.splice(0)) if (child.running) child.process.kill('SIGKILL');
});

/** Run `concord ARGS…` with a clean CONCORD_* environment plus `env`. */
export function runCli(
  args: string[],
  options: { env?: Record<string, string>; cwd?: string; stdin?: 'pipe' | 'ignore' } = {},
): Spawned {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('CONCORD_') && key !== 'DATABASE_URL') env[key] = value;
  }
  Object.assign(env, { CONCORD_LOG_LEVEL: 'warn' }, options.env);
  const child = spawn(process.execPath, [CLI, ...args], {
    env,
    cwd: options.cwd ?? REPO,
    stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    err += chunk;
    if (process.env['CONCORD_TEST_VERBOSE']) process.stderr.write(chunk);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const entry: Spawned = {
    process: child,
    pid: child.pid ?? 0,
    stdout: () => out,
    stderr: () => err,
    exited,
    get running() {
      return child.exitCode === null && child.signalCode === null;
    },
  };
  spawned.push(entry);
  return entry;
}

export interface CliNode extends Spawned {
  readonly name: string;
  readonly url: string;
}

export interface CliClusterOptions {
  store?: string;
  nodes?: number;
  /** Extra arguments for every node. */
  args?: string[];
  env?: Record<string, string>;
  /** Omit to use a random secret; null to start without CONCORD_SECRET. */
  secret?: string | null;
  /** Wait until the shards are spread over every node (default true when a store is used). */
  settle?: boolean;
}

/** Start N `concord node` processes at once and wait until every /readyz answers 200. */
export async function startCliCluster(options: CliClusterOptions): Promise<CliNode[]> {
  const count = options.nodes ?? 3;
  const secret = options.secret === undefined ? randomBytes(12).toString('hex') : options.secret;
  // HTTP and cluster ports chosen together: a node binding "any free port" for its cluster
  // port could otherwise take the HTTP port just picked for another node.
  const all = await freePorts(count * 2);
  const ports = all.slice(0, count);
  const nodes = ports.map((port, i): CliNode => {
    const name = `n${i + 1}`;
    const args = ['node', '--name', name, '--http-port', String(port), '--host', '127.0.0.1'];
    args.push('--cluster-port', String(all[count + i]));
    if (options.store) args.push('--store', options.store);
    const env = { ...(secret === null ? {} : { CONCORD_SECRET: secret }), ...options.env };
    return Object.assign(runCli([...args, ...(options.args ?? [])], { env }), {
      name,
      url: `http://127.0.0.1:${port}`,
    });
  });
  await Promise.all(nodes.map((node) => waitReady(node)));
  if (options.settle ?? options.store !== undefined) await waitSettled(nodes);
  return nodes;
}

export async function waitReady(node: CliNode, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!node.running) throw new Error(`${node.name} exited before it was ready:\n${node.stderr().slice(-3000)}`);
    const answer = await request(node, 'GET', '/readyz').catch(() => null);
    if (answer?.status === 200) return;
    await sleep(50);
  }
  throw new Error(`${node.name} not ready after ${timeoutMs} ms:\n${node.stderr().slice(-3000)}`);
}

interface ClusterBody {
  members: { name: string; status: string }[];
  shards: { count: number; held: number[]; owners: Record<string, number> };
}

/**
 * Settled: every shard held by exactly one node, every node holding some, and every node
 * seeing all members alive and an owner for every shard.
 */
export async function waitSettled(nodes: CliNode[], timeoutMs = 15_000): Promise<void> {
  await eventually(async () => {
    const views = await Promise.all(nodes.map(async (n) => (await request<ClusterBody>(n, 'GET', '/cluster')).body));
    const held = views.flatMap((v) => v.shards.held);
    const count = views[0]!.shards.count;
    if (held.length !== count || new Set(held).size !== count) throw new Error(`shards not settled: ${held.length}`);
    for (const view of views) {
      if (view.shards.held.length === 0) throw new Error('a node holds no shards yet');
      const owned = Object.values(view.shards.owners).reduce((a, b) => a + b, 0);
      if (owned !== count) throw new Error(`a node's shard map is not settled: ${owned} owned`);
      const alive = view.members.filter((m) => m.status === 'alive').length;
      if (alive !== nodes.length) throw new Error(`members not settled: ${alive}`);
    }
  }, timeoutMs);
}

/** SIGTERM every node; resolves with their exit codes. */
export async function stopAll(nodes: Spawned[]): Promise<(number | null)[]> {
  for (const node of nodes) if (node.running) node.process.kill('SIGTERM');
  return Promise.all(nodes.map(async (node) => (await node.exited).code));
}

export interface Answer<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  text: string;
  body: T;
}

export async function request<T = Record<string, unknown>>(
  node: { url: string },
  method: string,
  path: string,
  options: { json?: unknown; raw?: string; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Answer<T>> {
  const headers: Record<string, string> = { ...options.headers };
  let body: string | undefined = options.raw;
  if (options.json !== undefined) {
    body = JSON.stringify(options.json);
    headers['content-type'] ??= 'application/json';
  }
  const response = await fetch(`${node.url}${path}`, {
    method,
    headers,
    body,
    signal: AbortSignal.timeout(options.timeoutMs ?? 10_000),
  });
  const text = await response.text();
  let parsed: unknown = null;
  try {
    parsed = text.length > 0 ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  return { status: response.status, headers: response.headers, text, body: parsed as T };
}

export async function freePorts(count: number): Promise<number[]> {
  // Hold every port until all are chosen, so that no two are the same.
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const server = createServer();
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((s) => {
    const address = s.address();
    return typeof address === 'object' && address ? address.port : 0;
  });
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

/** A base port with `count` consecutive free ports after it. */
export async function freePortRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 30_000);
    const held: ReturnType<typeof createServer>[] = [];
    let ok = true;
    for (let i = 0; i < count && ok; i++) {
      const server = createServer();
      ok = await new Promise<boolean>((resolve) => {
        server.once('error', () => resolve(false));
        server.listen(base + i, '127.0.0.1', () => resolve(true));
      });
      if (ok) held.push(server);
    }
    await Promise.all(held.map((s) => new Promise((resolve) => s.close(resolve))));
    if (ok) return base;
  }
  throw new Error('no free port range');
}

export async function eventually<T>(fn: () => Promise<T>, timeoutMs = 10_000, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw last;
    await sleep(intervalMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Whether a process with this pid still runs (a zombie waiting to be reaped counts as gone). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) S …": the state follows the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    if (process.platform === 'linux') return false;
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** No stack trace in an HTTP answer or a log: no "at file:line" frames, no node_modules paths. */
export function hasStackTrace(text: string): boolean {
  return /\n\s+at\s/.test(text) || /"stack"\s*:/.test(text) || text.includes('node_modules');
}
