/**
 * A real PgBouncer (Debian's `pgbouncer` package; `.ci/run` installs it when missing) in front of
 * the test PostgreSQL server, for the tests of `?pgbouncer=true`.
 *
 * Its config lives in a temporary directory: every database name is forwarded to the same
 * database on the test server (`* = host=… port=…`), clients authenticate with SCRAM against a
 * userlist holding the test server's user and password (which PgBouncer also uses to log in to
 * the server). PgBouncer refuses to run as root, so as root it is started with `-u nobody` (the
 * directory and its files are then made readable for that user). Logs go to stderr and are kept
 * for failure messages. Stop it with `stop()`: SIGTERM (immediate shutdown), SIGKILL after 5 s.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import { freePorts } from '../../src/testing/local-cluster.js';
import { tempDir } from './tmp.js';

export type PoolMode = 'transaction' | 'session' | 'statement';

export interface PgBouncer {
  /** `pgbouncer --version`'s first line, e.g. "PgBouncer 1.18.0". */
  readonly version: string;
  readonly port: number;
  readonly poolMode: PoolMode;
  /** The settings written to its config, as `key = value` lines (for the test's log). */
  readonly settings: string;
  /** The same database URL, through PgBouncer (host and port replaced). */
  via(databaseUrl: string): string;
  logs(): string;
  stop(): Promise<void>;
}

function binary(): string {
  for (const candidate of ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer', '/usr/local/bin/pgbouncer']) {
    if (existsSync(candidate)) return candidate;
  }
  try {
    return execFileSync('sh', ['-c', 'command -v pgbouncer'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('pgbouncer is not installed: `apt-get install -y pgbouncer` (.ci/run does this in CI)');
  }
}

export async function startPgBouncer(
  serverUrl: string,
  options: { poolMode?: PoolMode; poolSize?: number } = {},
): Promise<PgBouncer> {
  const bin = binary();
  const version = execFileSync(bin, ['--version'], { encoding: 'utf8' }).split('\n')[0]!.trim();
  const server = new URL(serverUrl);
  const user = decodeURIComponent(server.username);
  const password = decodeURIComponent(server.password);
  const [port] = await freePorts(1);
  const dir = tempDir('pgbouncer-');
  const poolMode = options.poolMode ?? 'transaction';
  const settings = [
    `pool_mode = ${poolMode}`,
    'auth_type = scram-sha-256',
    `default_pool_size = ${options.poolSize ?? 20}`,
    'max_client_conn = 200',
  ].join('\n');
  writeFileSync(
    join(dir, 'pgbouncer.ini'),
    `[databases]
* = host=${server.hostname} port=${server.port || 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_file = ${join(dir, 'userlist.txt')}
${settings}
`,
  );
  writeFileSync(join(dir, 'userlist.txt'), `"${user}" "${password.replaceAll('"', '""')}"\n`);
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    chmodSync(dir, 0o755);
    chmodSync(join(dir, 'pgbouncer.ini'), 0o644);
    chmodSync(join(dir, 'userlist.txt'), 0o644);
  }
  const child: ChildProcess = spawn(bin, [...(asRoot ? ['-u', 'nobody'] : []), join(dir, 'pgbouncer.ini')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    log += chunk;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    log += chunk;
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const running = () => child.exitCode === null && child.signalCode === null;

  const via = (databaseUrl: string) => {
    const url = new URL(databaseUrl);
    url.hostname = '127.0.0.1';
    url.port = String(port);
    return url.toString();
  };
  const stop = async () => {
    if (running()) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };

  // Ready when a query goes through it.
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (!running()) throw new Error(`pgbouncer exited at start:\n${log}`);
    const sql = postgres(via(serverUrl), { max: 1, connect_timeout: 2, prepare: false, onnotice: () => {} });
    try {
      await sql`SELECT 1`;
      break;
    } catch (error) {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`pgbouncer did not answer: ${error instanceof Error ? error.message : error}\n${log}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      await sql.end({ timeout: 1 });
    }
  }
  return { version, port: port!, poolMode, settings, via, logs: () => log, stop };
}
