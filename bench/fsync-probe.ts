import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';

/**
 * What one power-loss-safe SQLite commit costs on this machine's disk: the median time of
 * single-row commits in WAL mode at synchronous=FULL (each waits for its fsync), on a file in
 * the directory the bench's stores live in. It gives durable writes their ceiling: with C
 * closed-loop callers each waiting for one commit, at most C / commit time writes a second.
 */
export function measureSqliteCommitMs(commits = 200): number {
  const dir = mkdtempSync(join(tmpdir(), 'concord-fsync-'));
  const db = new Database(join(dir, 'probe.db'));
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
    const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
    const times: number[] = [];
    for (let i = 0; i < commits; i++) {
      const started = performance.now();
      insert.run(`value ${i}`); // its own transaction: one commit, one fsync of the WAL
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    return times[Math.floor(times.length / 2)]!;
  } finally {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
