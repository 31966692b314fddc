/**
 * Fault injection for the cluster test harness. The runtime only creates one when a test flag is
 * set; production meshes run without it.
 *
 * Semantics of `dropTo`: this node silently discards every frame it would WRITE to the listed
 * peers (handshake frames and pings included). Incoming frames are not touched. So:
 * - a two-way partition between A and B is `dropTo(['B'])` on A plus `dropTo(['A'])` on B;
 * - a one-way cut (`dropTo` on one side only) behaves like real TCP over a one-way-lossy link:
 *   the other side stops hearing pings and pongs, declares the peer silent after 3 ping
 *   intervals and closes; re-dials then fail the handshake until `allow`. Requests that were
 *   already written when the cut happened end in `Timeout` or `PeerUnreachable`.
 * `send()` still returns true for a dropped frame: a partition is not visible to the sender.
 *
 * The store-cut flag is plain state for the runtime's store wrapper to read.
 */
export class FaultSwitch {
  private readonly dropped = new Set<string>();
  private cut = false;
  private readonly allowListeners: ((peers: string[]) => void)[] = [];

  /**
   * Called with the peers traffic is allowed to again (a healed partition). The mesh uses it
   * to re-dial them at once instead of waiting out a handshake whose frames were dropped.
   */
  onAllow(listener: (peers: string[]) => void): void {
    this.allowListeners.push(listener);
  }

  /** Start dropping outgoing frames to these peers (adds to the current set). */
  dropTo(peers: string[]): void {
    for (const p of peers) this.dropped.add(p);
  }

  /** Stop dropping to these peers, or to every peer when called without arguments. */
  allow(peers?: string[]): void {
    const healed = peers === undefined ? [...this.dropped] : peers.filter((p) => this.dropped.has(p));
    if (peers === undefined) this.dropped.clear();
    else for (const p of peers) this.dropped.delete(p);
    if (healed.length > 0) for (const listener of this.allowListeners) listener(healed);
  }

  isDropped(peer: string): boolean {
    return this.dropped.size !== 0 && this.dropped.has(peer);
  }

  /** Names currently dropped, for diagnostics. */
  droppedPeers(): string[] {
    return [...this.dropped];
  }

  cutStore(): void {
    this.cut = true;
  }

  restoreStore(): void {
    this.cut = false;
  }

  get storeCut(): boolean {
    return this.cut;
  }
}
