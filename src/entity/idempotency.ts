import { createHash } from 'node:crypto';
import type { IdempotencyRecord, StoredIdempotencyKey } from '../store/types.js';

/**
 * Idempotency keys of the entity host (see CallOptions.idempotencyKey and host.ts).
 *
 * - A keyed call's **fingerprint** is the SHA-256 (hex) of the canonical JSON of
 *   `[handlerName, message]`: object keys sorted, and `undefined` and `null` treated alike (a
 *   property holding either is left out), so that a message fingerprints the same whether it
 *   was passed by reference on the owner or crossed the peer transport.
 * - A key that guarded a change is stored with the change, in the same fenced write, together
 *   with the fingerprint and the JSON text of the reply. An activation remembers the keys of its
 *   entity in a KeyMemory, at most `limit` of them; beyond that it falls back to store lookups.
 */

/** Longest idempotency key accepted (characters). */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 1024;

/** The fingerprint of a keyed call. Throws TypeError when the message is not JSON-serialisable. */
export function fingerprint(handlerName: string, message: unknown): string {
  return createHash('sha256')
    .update(canonicalJson([handlerName, message]))
    .digest('hex');
}

/**
 * JSON with object keys sorted (by UTF-16 code units), `toJSON` honoured, and `undefined` /
 * `null` normalised: both are `null` in arrays and at the top, and an object property holding
 * either is left out. Throws TypeError for BigInt values and circular structures.
 */
export function canonicalJson(value: unknown): string {
  const seen: object[] = [];
  const walk = (input: unknown): string | undefined => {
    let v = input;
    if (v !== null && typeof v === 'object' && typeof (v as { toJSON?: unknown }).toJSON === 'function') {
      v = (v as { toJSON: () => unknown }).toJSON();
    }
    switch (typeof v) {
      case 'string':
      case 'boolean':
        return JSON.stringify(v);
      case 'number':
        return Number.isFinite(v) ? JSON.stringify(v) : 'null';
      case 'bigint':
        throw new TypeError('a BigInt is not JSON-serialisable');
      case 'undefined':
        return undefined;
      case 'function':
      case 'symbol':
        return undefined;
    }
    if (v === null) return undefined;
    const object = v as object;
    if (seen.includes(object)) throw new TypeError('a circular structure is not JSON-serialisable');
    seen.push(object);
    let out: string;
    if (Array.isArray(object)) {
      out = `[${object.map((item) => walk(item) ?? 'null').join(',')}]`;
    } else {
      const record = object as Record<string, unknown>;
      const parts: string[] = [];
      for (const key of Object.keys(record).sort()) {
        const text = walk(record[key]);
        if (text !== undefined) parts.push(`${JSON.stringify(key)}:${text}`);
      }
      out = `{${parts.join(',')}}`;
    }
    seen.pop();
    return out;
  };
  return walk(value) ?? 'null';
}

/**
 * The text a reply is remembered as: its JSON, or null for `undefined`. Throws TypeError when
 * the reply cannot be represented (a BigInt, a circular structure, a function).
 */
export function replyText(reply: unknown): string | null {
  if (reply === undefined) return null;
  const text = JSON.stringify(reply);
  if (typeof text !== 'string') throw new TypeError(`a ${typeof reply} is not JSON-serialisable`);
  return text;
}

/** The reply a remembered key answers with: a fresh copy each time. */
export function replayOf(known: KnownKey): unknown {
  return known.reply === null ? undefined : JSON.parse(known.reply);
}

export interface KnownKey {
  fingerprint: string;
  reply: string | null;
}

/**
 * The keys one activation knows of its entity, oldest first (Map insertion order). `complete`
 * says whether they are all the keys the store has for the entity: true after a load that got
 * everything, as long as nothing was evicted since. The host only adds keys whose write has
 * committed, and it is the entity's only writer while the activation lives.
 */
export class KeyMemory {
  private readonly known = new Map<string, KnownKey>();
  /** Loaded from the store (once per activation, after its fenced claim). */
  loaded = false;
  /** Holds every key the store has for the entity; when false, a miss must be looked up. */
  complete = true;

  constructor(readonly limit: number) {}

  get size(): number {
    return this.known.size;
  }

  get(key: string): KnownKey | undefined {
    return this.known.get(key);
  }

  /** Fill from the store's rows (newest first, at most limit + 1 asked for). */
  load(rows: readonly StoredIdempotencyKey[]): void {
    if (rows.length > this.limit) this.complete = false;
    const kept = rows.slice(0, this.limit);
    for (let i = kept.length - 1; i >= 0; i--) {
      const row = kept[i]!;
      this.known.set(row.key, { fingerprint: row.fingerprint, reply: row.reply });
    }
    this.loaded = true;
  }

  /** Remember a key (its write committed, or a lookup found it), evicting the oldest above the limit. */
  remember(record: IdempotencyRecord): void {
    this.known.delete(record.key);
    this.known.set(record.key, { fingerprint: record.fingerprint, reply: record.reply });
    while (this.known.size > this.limit) {
      const oldest = this.known.keys().next().value as string;
      this.known.delete(oldest);
      this.complete = false;
    }
  }
}
