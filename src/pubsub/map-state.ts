import { BUCKETS, bucketOf, Digest, versionHashes } from './digest.js';
import { compareVersions } from './hlc.js';
import type { WireEntry, WireVersion } from './wire.js';

/**
 * One replica of a replicated map: the entries with their versions, the tombstones, the
 * digest, and the memory of collected tombstones. No I/O: the map feeds it writes and merges,
 * anti-entropy reads versions and fingerprints from it.
 *
 * Merge rule: an incoming (key, version) replaces the current entry only if its version is
 * higher (HLC, then origin name), so merging is commutative, associative and idempotent.
 */

export interface Entry<V> {
  readonly value: V | undefined;
  readonly deleted: boolean;
  readonly l: number;
  readonly c: number;
  readonly o: string;
  readonly bucket: number;
  readonly h1: number;
  readonly h2: number;
  /** Local change sequence number when this entry arrived (tombstone collection). */
  readonly seq: number;
  /** Local monotonic time when this tombstone arrived (grace before collection); 0 for values. */
  readonly at: number;
}

interface Purged {
  readonly l: number;
  readonly c: number;
  readonly o: string;
  /** Forget the purge record after this local monotonic time. */
  readonly until: number;
}

/** Result of a merge: the write won (with the value it replaced), lost, or was already collected. */
export type MergeResult<V> = { previous: V | undefined } | 'stale' | 'purged';

export class MapState<V> {
  private readonly entries = new Map<string, Entry<V>>();
  private readonly bucketKeys: Set<string>[] = Array.from({ length: BUCKETS }, () => new Set<string>());
  readonly digest = new Digest();
  /** Keys whose current entry is a tombstone. */
  readonly tombstones = new Set<string>();
  private readonly purged = new Map<string, Purged>();
  private changeSeq = 0;
  private liveCount = 0;

  /** Entries with a value (not tombstones). */
  get size(): number {
    return this.liveCount;
  }

  /** Entries including tombstones (what the digest covers). */
  get entryCount(): number {
    return this.entries.size;
  }

  get purgedCount(): number {
    return this.purged.size;
  }

  /** Increases with every change; `seq` of an entry is the value after its arrival. */
  get seq(): number {
    return this.changeSeq;
  }

  entry(key: string): Entry<V> | undefined {
    return this.entries.get(key);
  }

  *liveEntries(): IterableIterator<[string, V]> {
    for (const [key, entry] of this.entries) if (!entry.deleted) yield [key, entry.value as V];
  }

  /** Merge one write (local or remote). */
  merge(key: string, l: number, c: number, o: string, deleted: boolean, value: V | undefined): MergeResult<V> {
    const current = this.entries.get(key);
    if (current !== undefined) {
      if (compareVersions(l, c, o, current.l, current.c, current.o) <= 0) return 'stale';
    } else {
      const purged = this.purged.get(key);
      if (purged !== undefined) {
        if (compareVersions(l, c, o, purged.l, purged.c, purged.o) <= 0) return 'purged';
        this.purged.delete(key);
      }
    }
    const previous = current !== undefined && !current.deleted ? current.value : undefined;
    const bucket = current?.bucket ?? bucketOf(key);
    if (current !== undefined) this.unlink(key, current, false);
    else this.bucketKeys[bucket]!.add(key);
    const [h1, h2] = versionHashes(key, l, c, o);
    this.digest.add(bucket, h1, h2);
    this.entries.set(key, {
      value: deleted ? undefined : value,
      deleted,
      l,
      c,
      o,
      bucket,
      h1,
      h2,
      seq: ++this.changeSeq,
      at: deleted ? performance.now() : 0,
    });
    if (deleted) this.tombstones.add(key);
    else this.liveCount++;
    return { previous };
  }

  /**
   * Collect the tombstone (or anything older) of `key` up to version (l, c, o): every member
   * holds that delete. Remembers the purge for `retainMs` so that a copy still travelling in
   * the cluster is not taken back in. Returns the value removed if a live (stale) one was.
   */
  purge(key: string, l: number, c: number, o: string, retainMs: number): { removed: boolean; previous: V | undefined } {
    const current = this.entries.get(key);
    if (current !== undefined && compareVersions(current.l, current.c, current.o, l, c, o) > 0) {
      return { removed: false, previous: undefined };
    }
    const existing = this.purged.get(key);
    if (existing === undefined || compareVersions(l, c, o, existing.l, existing.c, existing.o) > 0) {
      this.purged.set(key, { l, c, o, until: performance.now() + retainMs });
    }
    if (current === undefined) return { removed: false, previous: undefined };
    this.unlink(key, current, true);
    this.entries.delete(key);
    this.changeSeq++;
    return { removed: true, previous: current.deleted ? undefined : current.value };
  }

  purgedVersion(key: string): WireVersion | undefined {
    const p = this.purged.get(key);
    return p === undefined ? undefined : [key, p.l, p.c, p.o];
  }

  /** Forget purge records whose retention ended. */
  expirePurged(now: number): void {
    for (const [key, p] of this.purged) if (p.until <= now) this.purged.delete(key);
  }

  keysIn(bucket: number): ReadonlySet<string> {
    return this.bucketKeys[bucket]!;
  }

  /** Versions of every entry in these buckets. */
  versionsIn(buckets: readonly number[]): WireVersion[] {
    const versions: WireVersion[] = [];
    for (const bucket of buckets) {
      for (const key of this.bucketKeys[bucket]!) {
        const e = this.entries.get(key)!;
        versions.push([key, e.l, e.c, e.o]);
      }
    }
    return versions;
  }

  wire(key: string): WireEntry | undefined {
    const e = this.entries.get(key);
    if (e === undefined) return undefined;
    return e.deleted ? [key, e.l, e.c, e.o, 1] : [key, e.l, e.c, e.o, 0, e.value];
  }

  private unlink(key: string, entry: Entry<V>, dropKey: boolean): void {
    this.digest.remove(entry.bucket, entry.h1, entry.h2);
    if (entry.deleted) this.tombstones.delete(key);
    else this.liveCount--;
    if (dropKey) this.bucketKeys[entry.bucket]!.delete(key);
  }
}
