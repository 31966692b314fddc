import { BUCKETS } from './digest.js';

/**
 * What each peer is known to hold, for tombstone collection.
 *
 * When anti-entropy finds a bucket (or the whole replica) equal with a peer, every entry this
 * replica held in that bucket at that moment is on the peer too. The moment is recorded as this
 * replica's change sequence number, so "peer P holds entry E" is `confirmed[P][E.bucket] >=
 * E.seq` (E arrived no later than the comparison and is still the current entry of its key).
 */
export class Confirmations {
  private readonly byPeer = new Map<string, Float64Array>();

  confirmAll(peer: string, seq: number): void {
    const seqs = this.of(peer);
    for (let b = 0; b < BUCKETS; b++) if (seqs[b]! < seq) seqs[b] = seq;
  }

  confirm(peer: string, buckets: readonly number[], seq: number): void {
    const seqs = this.of(peer);
    for (const b of buckets) if (seqs[b]! < seq) seqs[b] = seq;
  }

  /** The peer went away: what it held may be gone (a restart), so confirm afresh. */
  forget(peer: string): void {
    this.byPeer.delete(peer);
  }

  /** Has every one of `peers` confirmed holding what this replica held at `seq` in `bucket`? */
  covers(peers: readonly string[], bucket: number, seq: number): boolean {
    for (const peer of peers) {
      const seqs = this.byPeer.get(peer);
      if (seqs === undefined || seqs[bucket]! < seq) return false;
    }
    return true;
  }

  private of(peer: string): Float64Array {
    let seqs = this.byPeer.get(peer);
    if (seqs === undefined) {
      seqs = new Float64Array(BUCKETS);
      this.byPeer.set(peer, seqs);
    }
    return seqs;
  }
}
