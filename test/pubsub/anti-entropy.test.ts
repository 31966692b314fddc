import { describe, expect, it } from 'vitest';
import { AntiEntropy, type Replica, type SyncLink } from '../../src/pubsub/anti-entropy.js';
import { Confirmations } from '../../src/pubsub/confirmations.js';
import { HybridClock } from '../../src/pubsub/hlc.js';
import { MapState } from '../../src/pubsub/map-state.js';
import type { WireEntry, WireVersion } from '../../src/pubsub/wire.js';

/** Two or more in-memory replicas wired by a synchronous fake link (no network). */
class Replicas {
  readonly nodes = new Map<string, TestReplica>();
  private readonly link = (self: string): SyncLink => ({
    request: async (peer, body) => this.nodes.get(peer)!.sync.answer(self, body),
    send: (peer, body) => {
      this.nodes.get(peer)!.sync.onPush(self, body);
      return true;
    },
  });

  add(name: string): TestReplica {
    const replica = new TestReplica(name, this.link(name));
    this.nodes.set(name, replica);
    return replica;
  }
}

class TestReplica implements Replica {
  readonly state = new MapState<unknown>();
  readonly confirmations = new Confirmations();
  readonly clock = new HybridClock();
  readonly sync: AntiEntropy;

  constructor(
    readonly name: string,
    link: SyncLink,
  ) {
    this.sync = new AntiEntropy('m', this, this.confirmations, link);
  }

  set(key: string, value: unknown): void {
    const { l, c } = this.clock.now();
    this.state.merge(key, l, c, this.name, false, value);
  }

  delete(key: string): void {
    const { l, c } = this.clock.now();
    this.state.merge(key, l, c, this.name, true, undefined);
  }

  mergeWire(entries: readonly WireEntry[]): WireVersion[] {
    const notices: WireVersion[] = [];
    for (const e of entries) {
      this.clock.observe(e[1], e[2]);
      const r = this.state.merge(e[0], e[1], e[2], e[3], e[4] === 1, e[4] === 0 ? e[5] : undefined);
      if (r === 'purged') notices.push(this.state.purgedVersion(e[0])!);
    }
    return notices;
  }

  applyPurges(versions: readonly WireVersion[]): void {
    for (const [k, l, c, o] of versions) this.state.purge(k, l, c, o, 60_000);
  }

  contents(): [string, unknown][] {
    return [...this.state.liveEntries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
  }
}

describe('replicated map state and anti-entropy (in memory)', () => {
  it('merge is last-writer-wins by version, in any order', () => {
    const a = new MapState<string>();
    const b = new MapState<string>();
    const writes: [string, number, number, string, boolean, string | undefined][] = [
      ['k', 10, 0, 'n1', false, 'v1'],
      ['k', 10, 1, 'n1', false, 'v2'],
      ['k', 10, 1, 'n2', true, undefined],
      ['j', 5, 0, 'n2', false, 'x'],
    ];
    for (const w of writes) a.merge(...w);
    for (const w of [...writes].reverse()) b.merge(...w);
    expect(a.entry('k')?.deleted).toBe(true);
    expect(b.entry('k')?.deleted).toBe(true);
    expect(a.digest.fingerprint()).toBe(b.digest.fingerprint());
    expect([...a.liveEntries()]).toEqual([['j', 'x']]);
  });

  it('a sync sends only what differs and leaves both replicas equal', async () => {
    const cluster = new Replicas();
    const a = cluster.add('a');
    const b = cluster.add('b');
    for (let i = 0; i < 5000; i++) {
      a.set(`k${i}`, i);
      b.mergeWire([a.state.wire(`k${i}`)!]);
    }
    expect(a.state.digest.fingerprint()).toBe(b.state.digest.fingerprint());
    // Divergence on both sides, including deletes of keys the other side updated.
    for (let i = 0; i < 300; i++) a.set(`k${i}`, `a${i}`);
    await new Promise((resolve) => setTimeout(resolve, 3));
    for (let i = 0; i < 100; i++) b.delete(`k${i}`);
    for (let i = 300; i < 400; i++) b.set(`k${i}`, `b${i}`);
    for (let i = 0; i < 50; i++) a.set(`new-a${i}`, i);

    const outcome = await a.sync.syncWith('b');
    expect(outcome.equal).toBe(false);
    expect(outcome.received).toBe(200);
    expect(outcome.pushed).toBe(250);
    expect(a.state.digest.fingerprint()).toBe(b.state.digest.fingerprint());
    expect(a.contents()).toEqual(b.contents());
    expect(a.state.entry('k5')?.deleted).toBe(true);
    expect(a.state.entry('k150')?.value).toBe('a150');
    expect(a.state.entry('k350')?.value).toBe('b350');
    expect((await a.sync.syncWith('b')).equal).toBe(true);
  });

  it('a collected tombstone is not taken back in, and its collection spreads', async () => {
    const cluster = new Replicas();
    const a = cluster.add('a');
    const b = cluster.add('b');
    a.set('x', 1);
    b.mergeWire([a.state.wire('x')!]);
    a.delete('x');
    b.mergeWire([a.state.wire('x')!]);
    const tomb = a.state.wire('x')!;
    // a collects; b still has the tombstone.
    a.applyPurges([[tomb[0], tomb[1], tomb[2], tomb[3]]]);
    expect(a.state.entry('x')).toBeUndefined();
    expect(b.state.tombstones.has('x')).toBe(true);
    await b.sync.syncWith('a');
    // b learnt that a collected it, and a did not take it back.
    expect(a.state.entry('x')).toBeUndefined();
    expect(b.state.entry('x')).toBeUndefined();
    expect(a.state.digest.fingerprint()).toBe(b.state.digest.fingerprint());
    // A newer write of the key is accepted again.
    b.set('x', 2);
    await b.sync.syncWith('a');
    expect(a.state.entry('x')?.value).toBe(2);
  });

  it('equal digests confirm what the peer holds (for tombstone collection)', async () => {
    const cluster = new Replicas();
    const a = cluster.add('a');
    cluster.add('b');
    a.delete('gone');
    const entry = a.state.entry('gone')!;
    expect(a.confirmations.covers(['b'], entry.bucket, entry.seq)).toBe(false);
    await a.sync.syncWith('b'); // pushes the tombstone
    await a.sync.syncWith('b'); // now equal
    expect(a.confirmations.covers(['b'], entry.bucket, entry.seq)).toBe(true);
  });

  it('hybrid clock: strictly increasing, and ahead of what it observed', () => {
    let now = 1000;
    const clock = new HybridClock(() => now);
    const t1 = clock.now();
    const t2 = clock.now();
    expect(t2.l === t1.l && t2.c === t1.c + 1).toBe(true);
    clock.observe(5000, 7);
    const t3 = clock.now();
    expect([t3.l, t3.c]).toEqual([5000, 8]);
    now = 6000;
    expect(clock.now()).toEqual({ l: 6000, c: 0 });
  });
});
