import type { Durability, SystemKind } from './protocol.js';
import type { StoreBackend } from './stores.js';

/** What an acknowledged write survives, said plainly for each system, store and setting. */

export function durabilityNote(system: SystemKind, backend: StoreBackend | null, durability: Durability): string {
  if (system === 'naive' || backend === null) {
    return 'none: held in one process’s memory only; lost on any crash or restart, and other nodes never see it';
  }
  if (backend === 'sqlite') {
    return durability === 'strict'
      ? 'survives process crash and power loss (acknowledged after the commit is on disk: SQLite synchronous=FULL); `--durability relaxed` trades power-loss safety for speed'
      : 'survives process crash; the last commits may be lost on power loss (SQLite WAL, synchronous=NORMAL, `--durability relaxed`); the default `strict` survives power loss';
  }
  return durability === 'strict'
    ? 'survives process crash and power loss of the database server (acknowledged after the PostgreSQL commit, synchronous_commit=on); `--durability relaxed` trades that for speed'
    : 'survives a crash of the node processes; a crash or power loss of the database server may lose the last ~0.6 s (synchronous_commit=off, `--durability relaxed`)';
}

/** The short form used in table cells. */
export function durabilityShort(system: SystemKind, backend: StoreBackend | null, durability: Durability): string {
  if (system === 'naive' || backend === null) return 'none (memory of one process)';
  if (backend === 'sqlite')
    return durability === 'strict' ? 'crash + power loss (sync=FULL)' : 'crash only (sync=NORMAL)';
  return durability === 'strict' ? 'crash + power loss (sync commit)' : 'node crash only (async commit)';
}
