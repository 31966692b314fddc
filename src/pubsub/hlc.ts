/**
 * Hybrid logical clock (Kulkarni et al.): a wall-clock millisecond `l` plus a counter `c`.
 *
 * `now()` is strictly greater than every timestamp this clock has produced or observed, and
 * stays close to the physical clock: `l` is the largest wall-clock reading seen anywhere. So
 * a write made after another one was seen always carries a higher version (causality), and
 * unrelated writes are ordered roughly by wall time.
 */

export interface Timestamp {
  /** Milliseconds since the Unix epoch (the largest physical time seen). */
  readonly l: number;
  /** Counter within `l`. */
  readonly c: number;
}

export class HybridClock {
  private l = 0;
  private c = 0;

  constructor(private readonly physical: () => number = Date.now) {}

  /** A new timestamp, greater than everything produced or observed so far. */
  now(): Timestamp {
    const pt = this.physical();
    if (pt > this.l) {
      this.l = pt;
      this.c = 0;
    } else {
      this.c++;
    }
    return { l: this.l, c: this.c };
  }

  /** Fold in a timestamp received from another node. */
  observe(l: number, c: number): void {
    if (l > this.l || (l === this.l && c > this.c)) {
      this.l = l;
      this.c = c;
    }
  }
}

/** Total order of versions: timestamp, then origin node name. */
export function compareVersions(al: number, ac: number, ao: string, bl: number, bc: number, bo: string): number {
  if (al !== bl) return al < bl ? -1 : 1;
  if (ac !== bc) return ac < bc ? -1 : 1;
  if (ao === bo) return 0;
  return ao < bo ? -1 : 1;
}
