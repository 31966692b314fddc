/**
 * Order-independent fingerprints of a replica, for anti-entropy.
 *
 * Each entry (key + version) hashes to 64 bits (two 32-bit lanes: FNV-1a over the key, then
 * murmur3 steps over the version's numbers). A bucket's fingerprint is the XOR of its entries' hashes, and the root is the XOR of
 * all of them: both are updated in O(1) per change (XOR the old entry out, the new one in), and
 * two replicas holding the same versions have equal fingerprints whatever order they got them in.
 * Keys map to buckets by their own hash, so both sides agree on which keys a bucket holds.
 */

export const BUCKETS = 1024;

/** Key hash (two independent 32-bit FNV-1a lanes in one pass); lane a also picks the bucket. */
function keyHash(key: string): [number, number] {
  let a = 0x811c9dc5;
  let b = 0x5bd1e995;
  for (let i = 0; i < key.length; i++) {
    const ch = key.charCodeAt(i);
    a = Math.imul(a ^ ch, 0x01000193);
    b = Math.imul(b ^ ch, 0x01000193);
  }
  return [avalanche(a), avalanche(b ^ key.length)];
}

export function bucketOf(key: string): number {
  return keyHash(key)[0] & (BUCKETS - 1);
}

const originHashes = new Map<string, number>();

/** Origins are a handful of node names: their hashes are computed once. */
function originHash(origin: string): number {
  let h = originHashes.get(origin);
  if (h === undefined) {
    h = keyHash(origin)[0];
    if (originHashes.size < 10_000) originHashes.set(origin, h);
  }
  return h;
}

/** The two 32-bit hashes of one version (key, l, c, origin) of one key. */
export function versionHashes(key: string, l: number, c: number, origin: string): [number, number] {
  const [ka, kb] = keyHash(key);
  const lo = l >>> 0;
  const hi = Math.floor(l / 0x100000000) >>> 0;
  const o = originHash(origin);
  return [avalanche(mix(mix(mix(mix(ka, lo), hi), c), o)), avalanche(mix(mix(mix(mix(kb, o), c), hi), lo))];
}

/** One murmur3 block step. */
function mix(h: number, k: number): number {
  let x = Math.imul(k, 0xcc9e2d51);
  x = (x << 15) | (x >>> 17);
  x = Math.imul(x, 0x1b873593);
  let y = h ^ x;
  y = (y << 13) | (y >>> 19);
  return (Math.imul(y, 5) + 0xe6546b64) | 0;
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

export class Digest {
  readonly h1 = new Uint32Array(BUCKETS);
  readonly h2 = new Uint32Array(BUCKETS);
  /** Entries per bucket (tombstones included). */
  readonly counts = new Uint32Array(BUCKETS);
  root1 = 0;
  root2 = 0;

  add(bucket: number, a: number, b: number): void {
    this.toggle(bucket, a, b);
    this.counts[bucket]!++;
  }

  remove(bucket: number, a: number, b: number): void {
    this.toggle(bucket, a, b);
    this.counts[bucket]!--;
  }

  private toggle(bucket: number, a: number, b: number): void {
    this.h1[bucket] = (this.h1[bucket]! ^ a) >>> 0;
    this.h2[bucket] = (this.h2[bucket]! ^ b) >>> 0;
    this.root1 = (this.root1 ^ a) >>> 0;
    this.root2 = (this.root2 ^ b) >>> 0;
  }

  /** `1234abcd:…` — equal strings mean (with overwhelming probability) equal replicas. */
  fingerprint(): string {
    return `${this.root1.toString(16).padStart(8, '0')}${this.root2.toString(16).padStart(8, '0')}`;
  }
}
