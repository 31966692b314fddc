/**
 * Temporary files for tests. Under vitest they live in a per-run directory that
 * global-setup.ts creates and deletes in teardown (CONCORD_TEST_TMP); test workers are
 * killed at the end of a run, so they could not reliably clean up after themselves.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fresh temporary directory (never reused). */
export function tempDir(prefix = 'concord-'): string {
  return mkdtempSync(join(process.env['CONCORD_TEST_TMP'] ?? tmpdir(), prefix));
}

/** `sqlite:/tmp/…/concord.db` in a fresh temporary directory; the file does not exist yet. */
export function tempSqliteUrl(): string {
  return `sqlite:${join(tempDir(), 'concord.db')}`;
}
