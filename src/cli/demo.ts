import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isWeakSecret, MIN_SECRET_BYTES } from '../cluster/secret-check.js';
import { generateSecret } from '../runtime/node.js';
import { DEMO_WEAK_SECRET_ENV, type OwnershipMode, redactUrl } from './options.js';
import { portIsFree } from './ports.js';

/**
 * `concord demo`: spawn N `concord node` children on one store, wait until every `/readyz`
 * answers 200, print the URLs, and keep them running until Ctrl-C (or `q`), which stops them all
 * (SIGTERM, then SIGKILL after a timeout).
 *
 * The demo survives its nodes: a node that dies (even by `kill -9`) is reported in words and the
 * others keep serving; it is restarted only when asked — a key in this terminal (its number) or
 * the restart button of the dashboard. The dashboards of the demo's nodes have buttons to kill,
 * pause/resume, partition/heal and restart each node (the nodes pass those requests to this
 * process over their IPC channel; a plain `concord node` has no such buttons).
 *
 * Children run in their own process group (Ctrl-C reaches only this parent, which stops them in
 * order) and watch their IPC channel to this process: if the parent dies, even by SIGKILL, the
 * channel closes and they stop by themselves.
 *
 * The cluster secret is CONCORD_SECRET when set (a short one is accepted, with a warning),
 * else one the demo generated for this store earlier, else a new one (see demoSecret).
 */

export interface DemoOptions {
  nodes: number;
  store: string;
  basePort: number;
  ownership: OwnershipMode;
}

const HOST = '127.0.0.1';
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
/** A node killed this long ago has surely lost its lease (default ttl 1.5 s): a restart need not wait. */
const NAME_LEASE_WAIT_MS = 1700;
const CLI_PATH = fileURLToPath(new URL('./main.js', import.meta.url));
/** Per-node settings a child must not inherit from the demo's environment. */
const NODE_SPECIFIC_ENV = ['CONCORD_NODE_NAME', 'CONCORD_HTTP_PORT', 'CONCORD_CLUSTER_PORT', 'CONCORD_ADVERTISE_HOST'];

type ProcessState = 'starting' | 'running' | 'paused' | 'partitioned' | 'killed' | 'exited';

interface Child {
  name: string;
  port: number;
  url: string;
  process: ChildProcess | null;
  state: ProcessState;
  exited: Promise<number | null>;
  exitCode: number | null | undefined;
  /** performance.now() of its last exit (a restart waits for its lease to run out first). */
  exitedAt: number;
}

/** Runs the demo until it is stopped; resolves with the exit status. */
export async function runDemo(options: DemoOptions): Promise<number> {
  const ports = Array.from({ length: options.nodes }, (_, i) => options.basePort + i);
  const taken: number[] = [];
  for (const port of ports) if (!(await portIsFree(port, HOST))) taken.push(port);
  if (taken.length > 0) {
    process.stderr.write(
      `concord demo: port${taken.length > 1 ? 's' : ''} ${taken.join(', ')} on ${HOST} already in use; ` +
        'stop whatever uses them or pick other ports with --base-port. Nothing was started.\n',
    );
    return 1;
  }

  let secret: DemoSecret;
  try {
    secret = await demoSecret(options);
  } catch (error) {
    process.stderr.write(`concord demo: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
  if (secret.weak) {
    process.stderr.write(
      `concord demo: warning: CONCORD_SECRET is shorter than ${MIN_SECRET_BYTES} bytes. The demo's nodes accept it, ` +
        `but \`concord node\` refuses it; make a strong one with: openssl rand -hex 24\n`,
    );
  }
  const demo = new Demo(options, secret, ports);
  return demo.run();
}

class Demo {
  private readonly children: Child[];
  private stopping: Promise<number> | null = null;
  private stopRequested!: () => void;
  private readonly stopSignal = new Promise<void>((resolve) => {
    this.stopRequested = resolve;
  });
  private started = false;
  private readonly onSignal = () => this.signal();
  private readonly onKey = (chunk: Buffer | string) => this.keys(String(chunk));
  private signals = 0;

  constructor(
    private readonly options: DemoOptions,
    private readonly secret: DemoSecret,
    ports: number[],
  ) {
    this.children = ports.map((port, i) => ({
      name: `node-${i + 1}`,
      port,
      url: `http://${HOST}:${port}`,
      process: null,
      state: 'starting',
      exited: Promise.resolve(null),
      exitCode: undefined,
      exitedAt: 0,
    }));
  }

  async run(): Promise<number> {
    for (const child of this.children) this.spawn(child);
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
    try {
      const started = await waitAllReady(this.children, () => this.stopping !== null);
      if (this.stopping) return await this.stopping;
      if (!started.ok) {
        process.stderr.write(`concord demo: ${started.reason}; stopping the others.\n`);
        await this.stop();
        return 1;
      }
      this.started = true;
      for (const child of this.children) if (child.state === 'starting') child.state = 'running';
      this.printBanner();
      this.listenToKeys();
      this.broadcast();
      await this.stopSignal;
      return await this.stop();
    } finally {
      process.off('SIGINT', this.onSignal);
      process.off('SIGTERM', this.onSignal);
      this.stopListeningToKeys();
    }
  }

  private signal(): void {
    this.signals++;
    if (this.signals === 1) {
      process.stdout.write(`\nstopping ${this.running().length} nodes…\n`);
      void this.stop();
    } else {
      // A second Ctrl-C: do not wait for graceful handoffs.
      for (const child of this.children) child.process?.kill('SIGKILL');
    }
  }

  private stop(): Promise<number> {
    if (!this.stopping) {
      this.stopping = stopAll(this.children);
      this.stopRequested();
    }
    return this.stopping;
  }

  private running(): Child[] {
    return this.children.filter((c) => c.state === 'running' || c.state === 'paused' || c.state === 'partitioned');
  }

  private spawn(child: Child): void {
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const key of NODE_SPECIFIC_ENV) delete env[key];
    delete env[DEMO_WEAK_SECRET_ENV];
    delete env['CONCORD_TEST_FAULTS'];
    Object.assign(env, {
      CONCORD_SECRET: this.secret.secret,
      CONCORD_EXIT_WITH_PARENT: '1',
      // The demo says in words what happens (and the dashboard shows it); the nodes' own logs only
      // from errors up, unless asked for.
      CONCORD_LOG_LEVEL: process.env['CONCORD_LOG_LEVEL'] ?? 'error',
      ...(this.secret.weak ? { [DEMO_WEAK_SECRET_ENV]: '1' } : {}),
    });
    const args = [CLI_PATH, 'node', '--name', child.name, '--http-port', String(child.port), '--host', HOST];
    args.push('--store', this.options.store, '--ownership', this.options.ownership, '--cluster-port', '0');
    if (this.options.ownership === 'single') args.push('--demo-controls');
    const proc = spawn(process.execPath, args, {
      env,
      // stdout: the demo prints its own summary; stderr: the nodes' warnings go to the terminal.
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      detached: true,
    });
    child.process = proc;
    child.exitCode = undefined;
    child.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        child.exitCode = code;
        resolve(code);
        this.onExit(child, proc, code, signal);
      });
      proc.once('error', () => {
        child.exitCode = null;
        resolve(null);
      });
    });
    proc.on('message', (message: unknown) => this.onMessage(child, message));
  }

  /** A child exited: unless the demo is stopping, say what happened in words and keep going. */
  private onExit(child: Child, proc: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (child.process !== proc) return;
    child.state = signal !== null ? 'killed' : 'exited';
    child.exitedAt = performance.now();
    if (this.stopping || !this.started) return;
    const others = this.running().map((c) => c.name);
    const how = signal !== null ? `was killed by ${signal}` : `exited with code ${code}`;
    const where =
      others.length > 0 ? `its shards fail over to ${others.join(', ')}` : 'no node is left to take its shards over';
    const text = `${child.name} ${how}; ${where}.`;
    process.stdout.write(`${text} Press ${this.keyOf(child)} (or its restart button) to start it again.\n`);
    this.broadcast(text);
  }

  private onMessage(from: Child, message: unknown): void {
    const m = message as { t?: string; action?: string; node?: string } | null;
    if (m?.t === 'demo-hello') {
      this.broadcast();
      return;
    }
    if (m?.t !== 'demo-action' || typeof m.action !== 'string' || typeof m.node !== 'string') return;
    const target = this.children.find((c) => c.name === m.node);
    if (!target) return;
    void this.act(m.action, target, `the dashboard of ${from.name}`);
  }

  private async act(action: string, child: Child, source: string): Promise<void> {
    if (this.stopping) return;
    const proc = child.process;
    const up = child.state === 'running' || child.state === 'paused' || child.state === 'partitioned';
    let text: string | null = null;
    switch (action) {
      case 'kill':
        if (!up || !proc) return;
        process.stdout.write(`${child.name}: kill -9 (${source})\n`);
        proc.kill('SIGCONT');
        proc.kill('SIGKILL');
        return; // onExit reports it
      case 'pause':
        if (child.state !== 'running' || !proc) return;
        proc.kill('SIGSTOP');
        child.state = 'paused';
        text = `${child.name} paused (SIGSTOP, ${source}): its connections go silent; past a lease it is suspected, evicted, and its shards fail over`;
        break;
      case 'resume':
        if (child.state !== 'paused' || !proc) return;
        proc.kill('SIGCONT');
        child.state = 'running';
        text = `${child.name} resumed (SIGCONT, ${source})`;
        break;
      case 'partition': {
        if (child.state !== 'running') return;
        const others = this.running().filter((c) => c !== child && c.state !== 'paused');
        await Promise.all([
          faults(child, { dropTo: this.children.filter((c) => c !== child).map((c) => c.name) }),
          ...others.map((c) => faults(c, { dropTo: [child.name] })),
        ]);
        child.state = 'partitioned';
        text = `${child.name} partitioned from the other nodes (${source}); it still reaches the store: the others evict it and take its shards over`;
        break;
      }
      case 'heal':
        if (child.state !== 'partitioned') return;
        await Promise.all(
          this.running()
            .filter((c) => c.state !== 'paused')
            .map((c) => faults(c, { allow: 'all' })),
        );
        child.state = 'running';
        text = `partition of ${child.name} healed (${source}); it rejoins once it reaches every member`;
        break;
      case 'restart':
        if (child.state !== 'killed' && child.state !== 'exited') return;
        await this.restart(child, source);
        return;
      default:
        return;
    }
    process.stdout.write(`${text}\n`);
    this.broadcast(text);
  }

  private async restart(child: Child, source: string): Promise<void> {
    child.state = 'starting';
    process.stdout.write(`${child.name}: starting again (${source})…\n`);
    // Its name stays leased until the lease of the killed process runs out (default 1.5 s).
    const wait = child.exitedAt + NAME_LEASE_WAIT_MS - performance.now();
    if (wait > 0) await sleep(wait);
    if (this.stopping) return;
    this.spawn(child);
    this.broadcast(`${child.name} is starting again (${source})`);
    const ready = await waitAllReady([child], () => this.stopping !== null);
    if (this.stopping) return;
    if (!ready.ok) {
      process.stdout.write(`${child.name} did not come back: ${ready.reason}\n`);
      return;
    }
    child.state = 'running';
    const text = `${child.name} is back (pid ${child.process?.pid}) and takes its share of the shards again`;
    process.stdout.write(`${text}\n`);
    this.broadcast(text);
  }

  /** Tell every running node the processes' states (and, with `notice`, what happened). */
  private broadcast(notice?: string): void {
    const processes = this.children.map((c) => ({
      name: c.name,
      url: c.url,
      state: c.state,
      pid: c.state === 'killed' || c.state === 'exited' ? null : (c.process?.pid ?? null),
    }));
    for (const child of this.children) {
      const proc = child.process;
      if (!proc?.connected || child.state === 'killed' || child.state === 'exited') continue;
      try {
        proc.send({ t: 'demo-processes', processes });
        if (notice) proc.send({ t: 'demo-notice', text: notice });
      } catch {
        // The child is going away; its exit is reported.
      }
    }
  }

  private keyOf(child: Child): string {
    const index = this.children.indexOf(child) + 1;
    return index <= 9 ? `${index}` : `r`;
  }

  private listenToKeys(): void {
    const stdin = process.stdin;
    if (stdin.isTTY) stdin.setRawMode(true);
    stdin.on('data', this.onKey);
    stdin.on('error', () => {});
    stdin.resume();
  }

  private stopListeningToKeys(): void {
    const stdin = process.stdin;
    stdin.off('data', this.onKey);
    if (stdin.isTTY) stdin.setRawMode(false);
    stdin.pause();
  }

  private keys(text: string): void {
    for (const key of text) {
      if (key === '\u0003' || key === 'q') {
        this.signal();
        return;
      }
      if (key === 'r') {
        for (const child of this.children) {
          if (child.state === 'killed' || child.state === 'exited') void this.act('restart', child, 'key r');
        }
        continue;
      }
      if (/^[1-9]$/.test(key)) {
        const child = this.children[Number(key) - 1];
        if (!child) continue;
        if (child.state === 'killed' || child.state === 'exited') void this.act('restart', child, `key ${key}`);
        else process.stdout.write(`${child.name} is ${child.state}; ${key} restarts it once it is down.\n`);
      }
    }
  }

  private printBanner(): void {
    const { children, options, secret } = this;
    const first = children[0]!;
    const last = Math.min(children.length, 9);
    const controls = options.ownership === 'single';
    const lines = [
      `concord demo: ${children.length} nodes ready (store ${options.ownership === 'none' ? 'none: ownership none, nodes will DISAGREE' : redactUrl(options.store)})`,
      ...children.map((c) => `  ${c.name}  ${c.url}  (pid ${c.process?.pid})`),
      ...(options.ownership === 'single' && secret.file !== null
        ? [
            `cluster secret: kept in ${relativeToCwd(secret.file)} (CONCORD_SECRET=$(cat ${relativeToCwd(secret.file)}) to add a node)`,
          ]
        : []),
      `dashboard: ${first.url}/${controls ? '  (live; its buttons kill, pause, partition and restart nodes)' : ''}`,
      'try:',
      `  curl ${first.url}/entities/entity_1`,
      `  curl -X PUT -H 'content-type: application/json' -d '{"state":"working"}' ${first.url}/entities/entity_1`,
      `  curl ${(children[1] ?? first).url}/entities/entity_1`,
      `  kill -9 ${children[children.length - 1]?.process?.pid}    # a node dies; the others take its shards over`,
      `keys: 1${last > 1 ? `-${last}` : ''} restart that node once it is down, r restarts every node that is down, q stops the demo`,
      'Ctrl-C stops every node.',
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  }
}

/** Change a node's fault switch (the demo's partition buttons); errors are reported, not thrown. */
async function faults(child: Child, change: { dropTo?: string[]; allow?: 'all' }): Promise<void> {
  try {
    const response = await fetch(`${child.url}/_test/faults`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(change),
      signal: AbortSignal.timeout(2000),
    });
    await response.arrayBuffer();
  } catch (error) {
    process.stdout.write(`${child.name}: could not change its network: ${String(error)}\n`);
  }
}

interface DemoSecret {
  secret: string;
  /** Shorter than MIN_SECRET_BYTES (only a secret the user gave can be). */
  weak: boolean;
  /** Where a generated secret is kept, for later demos on the same store; null when the user gave it. */
  file: string | null;
}

/**
 * The demo's cluster secret: CONCORD_SECRET when the user set it (even a short one), else the
 * one a demo generated earlier for this store (the store remembers its cluster's secret, so a
 * new one would be refused), else a new strong one, kept in a file readable by the user only:
 * next to a SQLite store (`PATH.secret`), or under ./.concord/ for another store.
 */
async function demoSecret(options: DemoOptions): Promise<DemoSecret> {
  if (options.ownership === 'none') return { secret: generateSecret(), weak: false, file: null }; // nothing shared
  const given = process.env['CONCORD_SECRET'];
  if (given) return { secret: given, weak: isWeakSecret(given), file: null };
  const file = options.store.startsWith('sqlite:')
    ? `${resolve(options.store.slice('sqlite:'.length))}.secret`
    : resolve('.concord', `demo-${createHash('sha256').update(options.store).digest('hex').slice(0, 16)}.secret`);
  try {
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, `${generateSecret()}\n`, { flag: 'wx', mode: 0o600 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new Error(`could not keep the demo's secret in ${file}: ${(error as Error).message}`);
    }
  }
  const secret = (await readFile(file, 'utf8')).trim();
  if (secret === '') throw new Error(`${file} is empty; delete it to have a new secret generated`);
  return { secret, weak: isWeakSecret(secret), file };
}

async function waitAllReady(
  children: Child[],
  stopped: () => boolean,
): Promise<{ ok: true } | { ok: false; reason: string }> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  const pending = new Set(children);
  while (pending.size > 0) {
    if (stopped()) return { ok: false, reason: 'stopped' };
    for (const child of pending) {
      if (child.exitCode !== undefined) return { ok: false, reason: `${child.name} exited before it was ready` };
      if (await isReady(child.url)) pending.delete(child);
    }
    if (Date.now() > deadline) {
      return {
        ok: false,
        reason: `${[...pending].map((c) => c.name).join(', ')} not ready after ${READY_TIMEOUT_MS} ms`,
      };
    }
    if (pending.size > 0) await sleep(100);
  }
  return { ok: true };
}

async function isReady(url: string): Promise<boolean> {
  try {
    const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1000) });
    await response.arrayBuffer();
    return response.status === 200;
  } catch {
    return false;
  }
}

/** SIGTERM every child, wait, SIGKILL the ones still running after the timeout. */
async function stopAll(children: Child[]): Promise<number> {
  const running = children.filter((c) => c.process !== null && c.exitCode === undefined);
  for (const child of running) {
    child.process?.kill('SIGCONT'); // a paused node must run to leave
    child.process?.kill('SIGTERM');
  }
  const timer = setTimeout(() => {
    for (const child of children) if (child.exitCode === undefined) child.process?.kill('SIGKILL');
  }, STOP_TIMEOUT_MS);
  const codes = await Promise.all(running.map((c) => c.exited));
  clearTimeout(timer);
  const clean = codes.every((code) => code === 0);
  process.stdout.write(clean ? 'all nodes stopped.\n' : `nodes stopped (exit codes ${codes.join(', ')}).\n`);
  return clean ? 0 : 1;
}

function relativeToCwd(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel.startsWith('..') || isAbsolute(rel) ? file : `./${rel}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
