/**
 * The eviction rule (src/cluster/eviction.ts) on hand-made membership tables: who goes, and
 * when, for the shapes of partial failure the rule must decide — an isolated node, a 2-node
 * split, one broken link among three, majority/minority splits of 30 — and what it must never
 * do (evict on a partial picture, let a minority evict a majority member, count stale reports).
 */
import { describe, expect, it } from 'vitest';
import { decideEvictions } from '../../src/cluster/eviction.js';
import type { NodeList, NodeRecord, SuspicionRecord } from '../../src/store/types.js';

const NOW = 1_000_000;
const OPTIONS = { stableAfterMs: 1500, staleAfterMs: 4500 };

/** Members named in age order: the first is the oldest (lowest incarnation). */
function members(names: string[]): NodeRecord[] {
  return names.map((name, i) => ({
    name,
    incarnation: 1000 + i,
    address: `${name}:1`,
    httpAddress: null,
    status: 'alive',
    leaseExpiresAt: NOW + 1000,
    evictedBy: null,
    evictedAt: null,
  }));
}

function view(nodes: NodeRecord[], pairs: [string, string, number?][], now = NOW): NodeList {
  const inc = new Map(nodes.map((n) => [n.name, n.incarnation]));
  const suspicions: SuspicionRecord[] = pairs.map(([reporter, suspect, age = 100]) => ({
    reporter,
    reporterIncarnation: inc.get(reporter)!,
    suspect,
    suspectIncarnation: inc.get(suspect)!,
    since: now - age,
    refreshedAt: now - 10,
  }));
  return { now, nodes, suspicions, version: 7 };
}

const evicted = (v: NodeList) => decideEvictions(v, OPTIONS).map((d) => `${d.name}:${d.reason}`);

describe('the eviction rule', () => {
  it('evicts nobody without suspicions', () => {
    expect(evicted(view(members(['a', 'b', 'c']), []))).toEqual([]);
  });

  it('an isolated node of three: evicted once both others report it, not before', () => {
    const nodes = members(['a', 'b', 'c']);
    // Only a has reported so far, and c (the suspect) reported nobody yet: wait.
    expect(evicted(view(nodes, [['a', 'c']]))).toEqual([]);
    // c reports a and b first (it is cut off from both): still no majority against anyone.
    expect(
      evicted(
        view(nodes, [
          ['c', 'a'],
          ['c', 'b'],
        ]),
      ),
    ).toEqual([]);
    // Both a and b report c: a strict majority of the others.
    const decisions = decideEvictions(
      view(nodes, [
        ['a', 'c'],
        ['b', 'c'],
        ['c', 'a'],
        ['c', 'b'],
      ]),
      OPTIONS,
    );
    expect(decisions).toEqual([{ name: 'c', incarnation: 1002, reporters: ['a', 'b'], reason: 'majority' }]);
  });

  it('the oldest node isolated: still the isolated one goes, whatever the ages', () => {
    const nodes = members(['c', 'a', 'b']); // c is the oldest
    expect(
      evicted(
        view(nodes, [
          ['a', 'c'],
          ['b', 'c'],
          ['c', 'a'],
          ['c', 'b'],
        ]),
      ),
    ).toEqual(['c:majority']);
  });

  it('a minority can never evict a member of the majority', () => {
    const nodes = members(['a', 'b', 'c', 'd', 'e']);
    // d and e are cut off from a, b, c; they report all three, long ago (stable).
    const pairs: [string, string, number][] = [];
    for (const minority of ['d', 'e']) for (const majority of ['a', 'b', 'c']) pairs.push([minority, majority, 5000]);
    expect(evicted(view(nodes, pairs))).not.toContain('a:majority');
    // With the majority's reports too, the minority goes, and only it.
    for (const majority of ['a', 'b', 'c']) for (const minority of ['d', 'e']) pairs.push([majority, minority, 5000]);
    expect(evicted(view(nodes, pairs)).sort()).toEqual(['d:majority', 'e:majority']);
  });

  it('two nodes that cannot reach each other: exactly one goes, the younger, once both reported', () => {
    const nodes = members(['a', 'b']); // a older
    // b reports first: no majority against a (b reports, but a is not the one taken out).
    expect(evicted(view(nodes, [['b', 'a']]))).toEqual([]);
    // a reports b: b (the younger) goes, by majority (1 of the 1 other member).
    expect(
      evicted(
        view(nodes, [
          ['a', 'b'],
          ['b', 'a'],
        ]),
      ),
    ).toEqual(['b:majority']);
    // The same whatever the names: age decides.
    const swapped = members(['b', 'a']); // b older
    expect(
      evicted(
        view(swapped, [
          ['a', 'b'],
          ['b', 'a'],
        ]),
      ),
    ).toEqual(['a:majority']);
  });

  it('one broken link among three: nobody at first, exactly one end once the picture is stable', () => {
    const nodes = members(['a', 'b', 'c']);
    const fresh = view(nodes, [
      ['a', 'b', 100],
      ['b', 'a', 100],
    ]);
    expect(evicted(fresh)).toEqual([]);
    const stable = view(nodes, [
      ['a', 'b', 2000],
      ['b', 'a', 1600],
    ]);
    expect(evicted(stable)).toEqual(['b:stable']);
  });

  it('a 20/10 split of 30 keeps the 20; a 15/15 split keeps the half with the oldest node', () => {
    const names = Array.from({ length: 30 }, (_, i) => `n${String(i).padStart(2, '0')}`);
    const nodes = members(names);
    const split = (left: string[], right: string[]) => {
      const pairs: [string, string, number][] = [];
      for (const l of left) for (const r of right) pairs.push([l, r, 100], [r, l, 100]);
      return pairs;
    };
    const big = names.slice(0, 20);
    const small = names.slice(20);
    expect(evicted(view(nodes, split(big, small))).sort()).toEqual(small.map((n) => `${n}:majority`).sort());
    // 15/15 with the oldest (n00) on the left: each node is reported by 15 of its 29 others, and
    // the taking-out order (ties against the youngest) picks the side without the oldest.
    const left = names.filter((_, i) => i % 2 === 0);
    const right = names.filter((_, i) => i % 2 === 1);
    expect(evicted(view(nodes, split(left, right))).sort()).toEqual(right.map((n) => `${n}:majority`).sort());
    // Before the left side has reported, nothing happens (no majority against anyone yet).
    const oneSided: [string, string, number][] = [];
    for (const r of right) for (const l of left) oneSided.push([r, l, 100]);
    expect(evicted(view(nodes, oneSided))).toEqual([]);
  });

  it('ignores stale reports, reports of non-members and of other incarnations', () => {
    const nodes = members(['a', 'b', 'c']);
    const v = view(nodes, [
      ['a', 'c'],
      ['b', 'c'],
    ]);
    // Not refreshed for longer than staleAfterMs.
    const stale: NodeList = { ...v, suspicions: v.suspicions.map((s) => ({ ...s, refreshedAt: NOW - 5000 })) };
    expect(evicted(stale)).toEqual([]);
    // A reporter that is no longer a member (leaving) does not count.
    const leaving: NodeList = {
      ...v,
      nodes: v.nodes.map((n) => (n.name === 'b' ? { ...n, status: 'leaving' as const } : n)),
    };
    expect(evicted(leaving)).toEqual(['c:majority']); // 1 of the 1 other member (a)
    // A suspicion of an older incarnation of c does not count.
    const restarted: NodeList = {
      ...v,
      suspicions: v.suspicions.map((s) => ({ ...s, suspectIncarnation: s.suspectIncarnation - 1 })),
    };
    expect(evicted(restarted)).toEqual([]);
    // An expired suspect is not a member: nothing to evict.
    const dead: NodeList = {
      ...v,
      nodes: v.nodes.map((n) => (n.name === 'c' ? { ...n, leaseExpiresAt: NOW - 1 } : n)),
    };
    expect(evicted(dead)).toEqual([]);
  });
});
