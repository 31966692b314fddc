/**
 * Which peer subscribes to which topic, as the peers told us. A peer is "known" from its
 * first full interest set (the hello exchange on each connection) until its connection drops.
 */
export class InterestTable {
  private readonly byPeer = new Map<string, Set<string>>();
  private readonly byTopic = new Map<string, Set<string>>();

  /** Has `peer` told us its full interest set on the current connection? */
  knows(peer: string): boolean {
    return this.byPeer.has(peer);
  }

  peers(): string[] {
    return [...this.byPeer.keys()];
  }

  peersOf(topic: string): ReadonlySet<string> | undefined {
    return this.byTopic.get(topic);
  }

  /** Replace the interest set of `peer`; returns the topics it joined and left. */
  replace(peer: string, topics: readonly string[]): { joined: string[]; left: string[] } {
    const next = new Set(topics);
    const previous = this.byPeer.get(peer) ?? new Set<string>();
    const left = [...previous].filter((t) => !next.has(t));
    this.byPeer.set(peer, previous);
    const joined = this.add(
      peer,
      [...next].filter((t) => !previous.has(t)),
    );
    this.remove(peer, left);
    return { joined, left };
  }

  /** Add topics to a known peer; returns the ones that are new. Unknown peers are ignored. */
  add(peer: string, topics: readonly string[]): string[] {
    const set = this.byPeer.get(peer);
    if (set === undefined) return [];
    const added: string[] = [];
    for (const topic of topics) {
      if (set.has(topic)) continue;
      set.add(topic);
      let peers = this.byTopic.get(topic);
      if (peers === undefined) {
        peers = new Set();
        this.byTopic.set(topic, peers);
      }
      peers.add(peer);
      added.push(topic);
    }
    return added;
  }

  /** Remove topics from a known peer; returns the ones it had. */
  remove(peer: string, topics: readonly string[]): string[] {
    const set = this.byPeer.get(peer);
    if (set === undefined) return [];
    const removed: string[] = [];
    for (const topic of topics) {
      if (!set.delete(topic)) continue;
      const peers = this.byTopic.get(topic);
      peers?.delete(peer);
      if (peers?.size === 0) this.byTopic.delete(topic);
      removed.push(topic);
    }
    return removed;
  }

  /** Forget `peer` (its connection dropped); returns the topics it had. */
  drop(peer: string): string[] {
    const set = this.byPeer.get(peer);
    if (set === undefined) return [];
    const topics = this.remove(peer, [...set]);
    this.byPeer.delete(peer);
    return topics;
  }
}
