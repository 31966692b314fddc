/**
 * Wire shapes of the replicated map (MessagePack arrays, validated on receipt: a peer is
 * authenticated but a bug on one node must not corrupt another's replica).
 */

/** A version: key, HLC (l, c) and the origin node of the write. */
export type WireVersion = [key: string, l: number, c: number, origin: string];

/** An entry: a version plus a tombstone flag and, for a live entry, the value. */
export type WireEntry =
  | [key: string, l: number, c: number, origin: string, deleted: 1]
  | [key: string, l: number, c: number, origin: string, deleted: 0, value: unknown];

export function isWireVersion(x: unknown): x is WireVersion {
  return (
    Array.isArray(x) &&
    x.length >= 4 &&
    typeof x[0] === 'string' &&
    Number.isSafeInteger(x[1]) &&
    Number.isSafeInteger(x[2]) &&
    typeof x[3] === 'string'
  );
}

export function isWireEntry(x: unknown): x is WireEntry {
  if (!isWireVersion(x)) return false;
  const entry = x as unknown[];
  return (entry[4] === 1 && entry.length === 5) || (entry[4] === 0 && entry.length === 6);
}

/** The elements of `value` that pass `check`, or null when `value` is not an array. */
export function listOf<T>(value: unknown, check: (x: unknown) => x is T): T[] | null {
  if (!Array.isArray(value)) return null;
  return value.filter(check);
}
