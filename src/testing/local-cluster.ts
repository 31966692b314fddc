import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeCerts } from '../cli/certs.js';
import { type ClientOptions, type ConcordClient, createClient } from '../client/client.js';
import { rendezvousOwner } from '../cluster/hash.js';
import { misplacedShards } from './placement.js';
import { stopProcess } from './process-stopped.js';

/**
 * LocalCluster: real concord node processes for tests, started through the `concord node`
 * command exactly as a user would, each with its own HTTP and cluster port, on one store.
 *
 * Nodes can be killed (SIGKILL), paused and resumed (SIGSTOP/SIGCONT), restarted and
 * stopped (SIGTERM). Network partitions and store cut-offs go through the core's fault
 * switch, reached over the test-only route `POST /_test/faults`, which exists only because
 * the harness starts every node with CONCORD_TEST_FAULTS=1.
 *
 * ```ts
 * const cluster = await LocalCluster.start({ nodes: 3 });
 * await cluster.partition(['n3'], ['n1', 'n2']);
 * await cluster.node('n1').put('/entities/e1', { state: 'working' });
 * await cluster.heal();
 * await cluster.eventually(async () => {
 *   const { body } = await cluster.node('n3').get('/entities/e1');
 *   if (body.state !== 'working') throw new Error('not yet');
 * });
 * await cluster.stop();
 * ```
 */

export interface LocalClusterOptions {
  /** Number of nodes (named n1, n2, …) unless `names` is given. */
  nodes?: number;
  names?: string[];
  /** Store URL; default a fresh SQLite file in a temporary directory. */
  store?: string;
  /** Extra environment for every node (for example CONCORD_LEASE_TTL_MS). */
  env?: Record<string, string>;
  /** Extra `concord node` arguments for every node (for example ['--ownership', 'none']). */
  args?: string[];
  /**
   * Your own code for the nodes to run: paths of ES modules (compiled JavaScript) that export
   * entity definitions (`defineEntity` / `defineEventSourcedEntity`) and/or ConcordApps. Each
   * is passed as `--app PATH`; call entities without routes with `node.call(kind, id, handler, message)`.
   */
  entities?: string | string[];
  /** How long to wait for every node to be ready. Default 30 s. */
  startTimeoutMs?: number;
  /** Cluster secret (at least 16 bytes); default a random one. */
  secret?: string;
  /** Print the nodes' logs to this process's stderr. */
  verbose?: boolean;
  /**
   * Mutual TLS between the nodes: a cluster CA and a certificate per node are made (with
   * `concord certs`' code, which runs openssl) in the cluster's temporary directory, and every
   * node gets `CONCORD_TLS_CERT/KEY/CA`. Nodes added later get one too (see AddNodeOptions.tls).
   */
  tls?: boolean;
  /**
   * Keep the cluster's temporary directory (`cluster.dir`: the default SQLite store, and the
   * nodes' logs written there by `stop()`) instead of deleting it on `stop()`. Default: whether
   * CONCORD_KEEP_TMP is set. `stop(timeout, { keepFiles: true })` decides per call, e.g. when a
   * test failed.
   */
  keepFiles?: boolean;
}

/** Certificate files of one node (paths). */
export interface NodeTlsFiles {
  cert: string;
  key: string;
  ca: string;
}

export interface HttpResult<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  body: T;
}

export interface EventuallyOptions {
  timeout?: number;
  interval?: number;
}

const cliPath = fileURLToPath(
  import.meta.url.endsWith('.ts')
    ? new URL('../../dist/src/cli/main.js', import.meta.url)
    : new URL('../cli/main.js', import.meta.url),
);

/** A free TCP port on 127.0.0.1 (bound and released; tiny race accepted in tests). */
export async function freePort(): Promise<number> {
  return (await freePorts(1))[0]!;
}

/**
 * `count` distinct free ports: every one is held until all are chosen, so no two are the
 * same (ports chosen one at a time may repeat once released).
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Server>((resolve, reject) => {
          const server = createServer();
          server.unref();
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((server) => {
    const address = server.address();
    return typeof address === 'object' && address ? address.port : 0;
  });
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  return ports;
}

export async function eventually<T>(fn: () => Promise<T> | T, options: EventuallyOptions = {}): Promise<T> {
  const timeout = options.timeout ?? 10_000;
  const interval = options.interval ?? 50;
  const deadline = Date.now() + timeout;
  let lastError: unknown;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) throw lastError;
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

/** What `LocalCluster.addNode` may set for the new node beyond the cluster's defaults. */
export interface AddNodeOptions {
  /** Its CONCORD_SECRET (default: the cluster's). */
  secret?: string;
  /** Its CONCORD_SECRET_PREVIOUS (default: none). */
  previousSecret?: string;
  /** Extra environment (over the cluster's). */
  env?: Record<string, string>;
  /** Extra `concord node` arguments (after the cluster's). */
  args?: string[];
  /**
   * Its TLS files: default, on a TLS cluster, a certificate of the cluster's CA made for it;
   * `false` starts it without TLS; or files of your own (e.g. from another CA).
   */
  tls?: false | NodeTlsFiles;
}

export class ClusterNode {
  private child: ChildProcess | null = null;
  private exited: Promise<number | null> = Promise.resolve(null);
  private logTail: string[] = [];
  private readonly env: NodeJS.ProcessEnv;

  constructor(
    readonly name: string,
    readonly httpPort: number,
    readonly clusterPort: number,
    private readonly spawnArgs: string[],
    env: NodeJS.ProcessEnv,
    private readonly verbose: boolean,
  ) {
    this.env = { ...env };
  }

  /**
   * Change the environment of this node's next launches (undefined removes a variable), e.g.
   * a secret rotation: `node.setEnv({ CONCORD_SECRET: next, CONCORD_SECRET_PREVIOUS: old })`,
   * then `await node.restart(undefined, { graceful: true })`.
   */
  setEnv(changes: Record<string, string | undefined>): void {
    for (const [key, value] of Object.entries(changes)) {
      if (value === undefined) delete this.env[key];
      else this.env[key] = value;
    }
  }

  get url(): string {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Is the process running (possibly paused)? */
  get running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Spawn the process (does not wait for readiness). */
  launch(): void {
    const child = spawn(process.execPath, [cliPath, ...this.spawnArgs], {
      env: this.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    this.logTail = [];
    const keep = (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      this.logTail.push(text);
      if (this.logTail.length > 1000) this.logTail.shift();
      if (this.verbose) process.stderr.write(`[${this.name}] ${text}`);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  /** Wait until GET /readyz answers 200. */
  async waitReady(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`${this.name} exited before it was ready\n${this.logs()}`);
      try {
        const response = await fetch(`${this.url}/readyz`, { signal: AbortSignal.timeout(1000) });
        await response.arrayBuffer();
        if (response.status === 200) return;
      } catch {
        // not listening yet
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`${this.name} not ready after ${timeoutMs} ms\n${this.logs()}`);
  }

  /** SIGKILL: no cleanup, no handoff. */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.child?.kill('SIGCONT');
    this.child?.kill('SIGKILL');
    await this.exited;
  }

  /**
   * SIGSTOP: the process freezes with its sockets open. Resolves once every thread of it has
   * stopped (see waitUntilStopped): until then it may still be running.
   */
  async pause(): Promise<void> {
    await stopProcess(this.child);
  }

  /** SIGCONT. */
  resume(): void {
    this.child?.kill('SIGCONT');
  }

  /** SIGTERM: graceful leave. Resolves with the exit code. */
  async stop(timeoutMs = 15_000): Promise<number | null> {
    if (!this.running) return this.exited;
    this.child?.kill('SIGCONT');
    this.child?.kill('SIGTERM');
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), timeoutMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }

  /**
   * Kill (if running; `graceful`: stop with SIGTERM instead) and start again under the same
   * name and ports, then wait until ready.
   */
  async restart(timeoutMs = 30_000, options: { graceful?: boolean } = {}): Promise<void> {
    if (options.graceful) await this.stop();
    else await this.kill();
    this.launch();
    await this.waitReady(timeoutMs);
  }

  /** Resolves with the exit code once the process has exited (null: killed by a signal). */
  waitExit(): Promise<number | null> {
    return this.exited;
  }

  /** The last `maxChars` (default 6,000) characters the process wrote to stdout and stderr. */
  logs(maxChars = 6000): string {
    return this.logTail.join('').slice(-maxChars);
  }

  // ---- HTTP helpers -----------------------------------------------------------

  request<T = Record<string, unknown>>(
    method: string,
    path: string,
    options: { body?: unknown; headers?: Record<string, string>; timeoutMs?: number } = {},
  ): Promise<HttpResult<T>> {
    const headers: Record<string, string> = { ...options.headers };
    let body: string | undefined;
    if (options.body !== undefined) {
      body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
      headers['content-type'] ??= 'application/json';
    }
    return fetch(`${this.url}${path}`, {
      method,
      headers,
      body,
      signal: AbortSignal.timeout(options.timeoutMs ?? 10_000),
    }).then(async (response) => {
      const text = await response.text();
      let parsed: unknown = text;
      try {
        parsed = text.length > 0 ? JSON.parse(text) : null;
      } catch {
        // not JSON: keep the text
      }
      return { status: response.status, headers: response.headers, body: parsed as T };
    });
  }

  get<T = Record<string, unknown>>(path: string, headers?: Record<string, string>): Promise<HttpResult<T>> {
    return this.request<T>('GET', path, { headers });
  }

  put<T = Record<string, unknown>>(
    path: string,
    body: unknown,
    headers?: Record<string, string>,
  ): Promise<HttpResult<T>> {
    return this.request<T>('PUT', path, { body, headers });
  }

  post<T = Record<string, unknown>>(
    path: string,
    body: unknown,
    headers?: Record<string, string>,
  ): Promise<HttpResult<T>> {
    return this.request<T>('POST', path, { body, headers });
  }

  /**
   * Call an entity handler through this node (any kind it runs, with or without HTTP routes)
   * via the test-only route `POST /_test/call`. Resolves with the handler's reply; rejects with
   * an Error carrying the HTTP status and the JSON error otherwise. `idempotencyKey` is sent as
   * the `Idempotency-Key` header and becomes the call's key; `timeoutMs` bounds the HTTP request.
   */
  async call<T = unknown>(
    kind: string,
    id: string,
    handler: string,
    message?: unknown,
    options: { idempotencyKey?: string; timeoutMs?: number } = {},
  ): Promise<T> {
    const headers: Record<string, string> = {};
    if (options.idempotencyKey !== undefined) headers['idempotency-key'] = quoteIdempotencyKey(options.idempotencyKey);
    const result = await this.request<{ value?: T; error?: string }>('POST', '/_test/call', {
      body: { kind, id, handler, message },
      headers,
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
    });
    if (result.status !== 200) {
      throw Object.assign(
        new Error(`${kind}/${id}.${handler} via ${this.name}: ${result.status} ${result.body.error ?? ''}`),
        {
          status: result.status,
          body: result.body,
        },
      );
    }
    return result.body.value as T;
  }

  /**
   * The value of a Prometheus metric from this node's `/metrics`, summed over its series (0 when
   * it has none); with `labels`, only the series that carry them.
   */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const { body } = await this.request<string>('GET', '/metrics');
    let sum = 0;
    for (const line of String(body).split('\n')) {
      const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
      if (!match || match[1] !== name) continue;
      const series = match[2] ?? '';
      if (Object.entries(labels).some(([k, v]) => !series.includes(`${k}="${v}"`))) continue;
      sum += Number(match[3]);
    }
    return sum;
  }

  /** This node's open peer connections by what carries them (`concord_peer_links`). */
  async peerLinks(): Promise<{ unix: number; tcp: number }> {
    return {
      unix: await this.metric('concord_peer_links', { link: 'unix' }),
      tcp: await this.metric('concord_peer_links', { link: 'tcp' }),
    };
  }

  /** Change this node's fault switch (test-only route). */
  async faults(change: { dropTo?: string[]; allow?: string[] | 'all'; cutStore?: boolean }): Promise<void> {
    const result = await this.post('/_test/faults', change);
    if (result.status !== 200) {
      throw new Error(`fault injection on ${this.name} failed: ${result.status} ${JSON.stringify(result.body)}`);
    }
  }
}

export class LocalCluster {
  private constructor(
    readonly nodes: ClusterNode[],
    readonly store: string,
    readonly secret: string,
    /** The cluster's temporary directory (its default SQLite store; node logs when kept). */
    readonly dir: string,
    private readonly env: NodeJS.ProcessEnv,
    private readonly nodeArgs: string[],
    private readonly verbose: boolean,
    private readonly keepFiles: boolean,
    /** The directory of the cluster CA and node certificates when the cluster runs TLS. */
    readonly tlsDir: string | null = null,
  ) {}

  /** Make a certificate of this cluster's CA for `name` (a TLS cluster only). */
  async certificateFor(name: string): Promise<NodeTlsFiles> {
    if (this.tlsDir === null) throw new Error('this cluster does not run TLS');
    const made = await makeCerts({ dir: this.tlsDir, nodes: [name], hosts: ['127.0.0.1', 'localhost'], force: true });
    return made.nodes[name]!;
  }

  /**
   * Prepare one more node for this cluster's store, with its own ports and, optionally, another
   * secret or extra environment and arguments. It is not started: call `launch()` (then
   * `waitReady()`, or `waitExit()` and `logs()` for a node expected to be refused). It joins
   * `nodes`, so `stop()` stops it too.
   *
   * ```ts
   * const intruder = await cluster.addNode('n4', { secret: randomBytes(24).toString('hex') });
   * intruder.launch();
   * expect(await intruder.waitExit()).not.toBe(0);
   * ```
   */
  async addNode(name: string, options: AddNodeOptions = {}): Promise<ClusterNode> {
    if (this.nodes.some((n) => n.name === name)) throw new Error(`a node named ${name} already exists`);
    const [httpPort, clusterPort] = await freePorts(2);
    const env: NodeJS.ProcessEnv = { ...this.env, ...options.env };
    const tls = options.tls ?? (this.tlsDir === null ? false : await this.certificateFor(name));
    Object.assign(env, tlsEnv(tls));
    if (options.secret !== undefined) env['CONCORD_SECRET'] = options.secret;
    if (options.previousSecret !== undefined) env['CONCORD_SECRET_PREVIOUS'] = options.previousSecret;
    const args = [...nodeArgs(name, httpPort!, clusterPort!, this.store), ...this.nodeArgs, ...(options.args ?? [])];
    const node = new ClusterNode(name, httpPort!, clusterPort!, args, env, this.verbose);
    this.nodes.push(node);
    return node;
  }

  static async start(options: LocalClusterOptions = {}): Promise<LocalCluster> {
    const names = options.names ?? Array.from({ length: options.nodes ?? 3 }, (_, i) => `n${i + 1}`);
    const dir = mkdtempSync(join(tmpdir(), 'concord-cluster-'));
    const store = options.store ?? `sqlite:${join(dir, 'concord.db')}`;
    const tlsDir = options.tls ? join(dir, 'certs') : null;
    const certs =
      tlsDir === null ? null : await makeCerts({ dir: tlsDir, nodes: names, hosts: ['127.0.0.1', 'localhost'] });
    const secret = options.secret ?? randomBytes(24).toString('hex');
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      CONCORD_LOG_LEVEL: process.env.CONCORD_LOG_LEVEL ?? 'warn',
      ...options.env,
      CONCORD_SECRET: secret,
      CONCORD_TEST_FAULTS: '1',
    };
    const nodes: ClusterNode[] = [];
    // Every port chosen up front: a node binding "any free port" could otherwise take the
    // port just picked for another node.
    const ports = await freePorts(names.length * 2);
    const extraArgs = [...[options.entities ?? []].flat().flatMap((path) => ['--app', path]), ...(options.args ?? [])];
    for (const [i, name] of names.entries()) {
      const httpPort = ports[2 * i]!;
      const clusterPort = ports[2 * i + 1]!;
      const args = [...nodeArgs(name, httpPort, clusterPort, store), ...extraArgs];
      const nodeEnv = certs === null ? env : { ...env, ...tlsEnv(certs.nodes[name]!) };
      nodes.push(new ClusterNode(name, httpPort, clusterPort, args, nodeEnv, options.verbose ?? false));
    }
    const keepFiles = options.keepFiles ?? Boolean(process.env['CONCORD_KEEP_TMP']);
    const cluster = new LocalCluster(
      nodes,
      store,
      secret,
      dir,
      env,
      extraArgs,
      options.verbose ?? false,
      keepFiles,
      tlsDir,
    );
    try {
      // The first node creates the schema; the others then join in parallel.
      nodes[0]?.launch();
      await nodes[0]?.waitReady(options.startTimeoutMs);
      for (const node of nodes.slice(1)) node.launch();
      await Promise.all(nodes.slice(1).map((node) => node.waitReady(options.startTimeoutMs)));
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  node(name: string): ClusterNode {
    const node = this.nodes.find((n) => n.name === name);
    if (!node) throw new Error(`no node named ${name}`);
    return node;
  }

  get urls(): string[] {
    return this.nodes.map((n) => n.url);
  }

  /**
   * A `concord-cluster/client` for this cluster, seeded with every node's URL (the entities'
   * handlers must be exposed, see EntityOptions.exposed). Close it when done.
   */
  client(options: Omit<ClientOptions, 'nodes'> & { nodes?: readonly string[] }): ConcordClient {
    return createClient({ ...options, nodes: options.nodes ?? this.urls });
  }

  /** Cut the network both ways between two groups of nodes (each keeps its store). */
  async partition(groupA: (string | ClusterNode)[], groupB: (string | ClusterNode)[]): Promise<void> {
    const a = groupA.map(nameOf);
    const b = groupB.map(nameOf);
    await Promise.all([
      ...a.map((name) => this.node(name).faults({ dropTo: b })),
      ...b.map((name) => this.node(name).faults({ dropTo: a })),
    ]);
  }

  /** One-way cut: `from` can no longer send to `to` (replies included). */
  async isolate(from: string | ClusterNode, to: string | ClusterNode): Promise<void> {
    await this.node(nameOf(from)).faults({ dropTo: [nameOf(to)] });
  }

  /** Undo every partition and isolation (on nodes that are running and not paused). */
  async heal(): Promise<void> {
    await Promise.all(this.nodes.filter((n) => n.running).map((n) => n.faults({ allow: 'all' })));
  }

  /** Make every store call of `node` fail, as if the database were unreachable from it. */
  async cutStore(node: string | ClusterNode): Promise<void> {
    await this.node(nameOf(node)).faults({ cutStore: true });
  }

  async restoreStore(node: string | ClusterNode): Promise<void> {
    await this.node(nameOf(node)).faults({ cutStore: false });
  }

  async waitReady(timeoutMs?: number): Promise<void> {
    await Promise.all(this.nodes.filter((n) => n.running).map((n) => n.waitReady(timeoutMs)));
  }

  eventually<T>(fn: () => Promise<T> | T, options?: EventuallyOptions): Promise<T> {
    return eventually(fn, options);
  }

  /**
   * Resolves once ownership has settled on the running nodes: each holds exactly the shards
   * whose rendezvous owner among them it is, and each one's shard map names those owners (as
   * each reports in `GET /cluster`). After a fault a node may rejoin and take its shards back by
   * handoff for a while, and the other nodes learn of that only at their next read of the
   * shard map, so a test that asks any node for "the owner" of an entity and then acts on that
   * node waits for this first. Default timeout 15 s.
   */
  async balanced(options: EventuallyOptions = {}): Promise<void> {
    await eventually(
      async () => {
        const live = this.nodes.filter((node) => node.running);
        const names = live.map((node) => node.name);
        const views = await Promise.all(
          live.map(
            async (node) => (await node.get<{ shards: { held: number[]; map: (string | null)[] } }>('/cluster')).body,
          ),
        );
        const shardCount = views[0]?.shards.map.length ?? 0;
        const misplaced = misplacedShards(
          names,
          views.map((view) => new Set(view.shards.held)),
          shardCount,
        );
        let misnamed = 0;
        for (let shard = 0; shard < shardCount; shard++) {
          const owner = rendezvousOwner(shard, names);
          for (const view of views) if (view.shards.map[shard] !== owner) misnamed++;
        }
        if (shardCount === 0 || misplaced > 0 || misnamed > 0) {
          throw new Error(
            `ownership not settled: ${misplaced} shards held by the wrong node, ${misnamed} map entries not naming the owner`,
          );
        }
      },
      { timeout: 15_000, ...options },
    );
  }

  /**
   * Stop every node: SIGTERM (graceful), SIGKILL after the timeout. Then delete the cluster's
   * temporary directory — or, with `keepFiles` (default: the cluster's option), write every
   * node's log there (`NAME.log`) and print where it is on stderr:
   *
   * ```ts
   * afterEach(async ({ task }) => cluster.stop(undefined, { keepFiles: task.result?.state === 'fail' }));
   * ```
   */
  async stop(timeoutMs = 15_000, options: { keepFiles?: boolean } = {}): Promise<void> {
    for (const node of this.nodes) node.resume();
    try {
      await Promise.all(this.nodes.map((node) => node.stop(timeoutMs)));
    } finally {
      this.cleanUp(options.keepFiles);
    }
  }

  /**
   * Kill every node at once (no handoff). The directory stays (the nodes can be started
   * again on the same store) until `stop()` or `destroy()`.
   */
  async kill(): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.kill()));
  }

  /**
   * A quick teardown: kill every node at once (no handoff, so no waiting for one), then delete
   * the cluster's temporary directory, or keep it as `stop()` does with `keepFiles`.
   */
  async destroy(options: { keepFiles?: boolean } = {}): Promise<void> {
    try {
      await this.kill();
    } finally {
      this.cleanUp(options.keepFiles);
    }
  }

  /** Delete the cluster's directory, or keep it and write every node's log into it. */
  private cleanUp(keepFiles = this.keepFiles): void {
    if (keepFiles) {
      for (const node of this.nodes)
        writeFileSync(join(this.dir, `${node.name}.log`), node.logs(Number.POSITIVE_INFINITY));
      process.stderr.write(`LocalCluster: kept the cluster's files (store, node logs) in ${this.dir}\n`);
    } else {
      rmSync(this.dir, { recursive: true, force: true, maxRetries: 3 });
    }
  }
}

function nodeArgs(name: string, httpPort: number, clusterPort: number, store: string): string[] {
  return [
    'node',
    '--name',
    name,
    '--http-port',
    String(httpPort),
    '--cluster-port',
    String(clusterPort),
    '--host',
    '127.0.0.1',
    '--store',
    store,
  ];
}

/** The CONCORD_TLS_* variables of a node (empty strings for none: the node then runs without TLS). */
function tlsEnv(files: false | NodeTlsFiles): Record<string, string> {
  return files === false
    ? { CONCORD_TLS_CERT: '', CONCORD_TLS_KEY: '', CONCORD_TLS_CA: '' }
    : { CONCORD_TLS_CERT: files.cert, CONCORD_TLS_KEY: files.key, CONCORD_TLS_CA: files.ca };
}

/** An idempotency key as the `Idempotency-Key` header's Structured Field string: `"key"`. */
export function quoteIdempotencyKey(key: string): string {
  return `"${key.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}

function nameOf(node: string | ClusterNode): string {
  return typeof node === 'string' ? node : node.name;
}
