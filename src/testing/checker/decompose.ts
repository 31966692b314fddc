/**
 * Per-key decomposition. Linearizability is compositional (Herlihy & Wing):
 * a history is linearizable iff the sub-history of every object is, so each
 * key (entity) is checked on its own.
 */

import type { History, HistoryEntry } from './history.js';

export interface IndexedEntry {
  /** Position of the entry in the full history (stable identity for reports). */
  readonly index: number;
  readonly entry: HistoryEntry;
}

/** Groups entries by key, keys in order of first appearance, entries in history order. */
export function partitionByKey(history: History): Map<string, IndexedEntry[]> {
  const byKey = new Map<string, IndexedEntry[]>();
  history.forEach((entry, index) => {
    let entries = byKey.get(entry.key);
    if (entries === undefined) {
      entries = [];
      byKey.set(entry.key, entries);
    }
    entries.push({ index, entry });
  });
  return byKey;
}
