/**
 * Stable hashing shared by every node: which shard an entity lives in, and which
 * live member should own a shard (rendezvous / highest-random-weight hashing).
 * Both must give the same answer on every node and across versions, so they are
 * defined here on the UTF-16 code units of the strings, with no platform input.
 */

/** FNV-1a over the code units of `text`, finished with murmur3's avalanche step. */
export function hash32(text: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return avalanche(h);
}

function avalanche(value: number): number {
  let h = value;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The shard of entity (kind, id). */
export function shardOf(kind: string, id: string, shardCount: number): number {
  // Hash kind and id separately and combine, so ("a\u0000b", "c") and ("a", "b\u0000c") differ.
  const h = avalanche((hash32(kind) ^ Math.imul(hash32(id, 0x9747b28c), 0x9e3779b1)) >>> 0);
  return h % shardCount;
}

/**
 * The member with the highest weight for `shard`. A join or leave only moves the
 * shards whose top-weighted member changes: about 1/N of them.
 * Ties (astronomically unlikely) break by name so every node agrees.
 */
export function rendezvousOwner(shard: number, members: readonly string[]): string | null {
  let best: string | null = null;
  let bestWeight = -1;
  for (const member of members) {
    const weight = hash32(`${member}#${shard}`);
    if (weight > bestWeight || (weight === bestWeight && best !== null && member < best)) {
      best = member;
      bestWeight = weight;
    }
  }
  return best;
}
