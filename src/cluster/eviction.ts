import type { NodeList, NodeRecord } from '../store/types.js';

/**
 * The eviction rule: which members the store should evict, decided from the membership table
 * alone (rows and suspicions), so that every node that evaluates it on the same snapshot
 * reaches the same answer. It only ever *chooses*; the store applies a choice with a
 * compare-and-set on the membership version (Store.evictMember), so two nodes deciding on
 * different snapshots cannot both act, and safety never depends on this rule at all (an
 * eviction only stops a lease from being renewed; see docs/architecture.md).
 *
 * 1. The members are the rows that are `alive` with a live lease. A suspicion counts when its
 *    reporter and its suspect are members at the incarnations it names and the reporter has
 *    refreshed it recently. A suspicion is a *broken link* between two members, whichever of
 *    the two reported it.
 * 2. Until no broken link is left, the member with the most broken links is taken out; ties go
 *    against the youngest member (the highest incarnation), then the highest name. This keeps
 *    the largest group of members that can all reach each other: an isolated node is taken out
 *    (every other member reports it), a majority side outlives a minority side, and of the two
 *    ends of one broken link exactly one goes.
 * 3. A member taken out is evicted
 *    - at once when a strict majority of the other members report it (a minority can never
 *      evict a member of a majority: it cannot form a majority of reporters), or
 *    - once no new suspicion has been recorded for `stableAfterMs` (the picture has settled:
 *      both ends of a link have had time to report), which decides the cases no majority
 *      does: two nodes that cannot reach each other, or one broken link among many members.
 *
 * Flapping links and pauses shorter than the suspicion timeout never produce a suspicion, so
 * they never get here; see Membership for when a suspicion is recorded.
 */

export interface EvictionRuleOptions {
  /** Evict without a majority of reporters once the suspicions have not changed for this long. */
  stableAfterMs: number;
  /** A suspicion its reporter has not refreshed for this long no longer counts. */
  staleAfterMs: number;
}

export interface EvictionDecision {
  name: string;
  incarnation: number;
  /** The members whose suspicions back it. */
  reporters: string[];
  /** Why now: a majority of the other members report it, or the picture has been stable. */
  reason: 'majority' | 'stable';
}

/** Live members: `alive` with a lease that has not run out at `now`. */
export function liveMembers(view: Pick<NodeList, 'now' | 'nodes'>): NodeRecord[] {
  return view.nodes.filter((n) => n.status === 'alive' && n.leaseExpiresAt > view.now);
}

/** Current suspicions between members, as `reporter → suspects`. */
export function currentSuspicions(view: NodeList, staleAfterMs: number): Map<string, Set<string>> {
  const members = new Map(liveMembers(view).map((m) => [m.name, m.incarnation]));
  const result = new Map<string, Set<string>>();
  for (const s of view.suspicions) {
    if (members.get(s.reporter) !== s.reporterIncarnation) continue;
    if (members.get(s.suspect) !== s.suspectIncarnation) continue;
    if (s.refreshedAt < view.now - staleAfterMs) continue;
    let set = result.get(s.reporter);
    if (!set) {
      set = new Set();
      result.set(s.reporter, set);
    }
    set.add(s.suspect);
  }
  return result;
}

export function decideEvictions(view: NodeList, options: EvictionRuleOptions): EvictionDecision[] {
  const members = liveMembers(view);
  const suspicions = currentSuspicions(view, options.staleAfterMs);
  if (suspicions.size === 0) return [];

  const byName = new Map(members.map((m) => [m.name, m]));
  const links = new Map<string, Set<string>>(members.map((m) => [m.name, new Set<string>()]));
  let newest = Number.NEGATIVE_INFINITY;
  for (const s of view.suspicions) {
    if (suspicions.get(s.reporter)?.has(s.suspect)) newest = Math.max(newest, s.since);
  }
  for (const [reporter, suspects] of suspicions) {
    for (const suspect of suspects) {
      links.get(reporter)!.add(suspect);
      links.get(suspect)!.add(reporter);
    }
  }

  // Greedy: take out the member with the most broken links until none is left.
  const removed: NodeRecord[] = [];
  for (;;) {
    let worst: NodeRecord | null = null;
    let worstDegree = 0;
    for (const [name, linked] of links) {
      const degree = linked.size;
      if (degree === 0) continue;
      const member = byName.get(name)!;
      if (worst === null || degree > worstDegree || (degree === worstDegree && younger(member, worst))) {
        worst = member;
        worstDegree = degree;
      }
    }
    if (worst === null) break;
    removed.push(worst);
    for (const other of links.get(worst.name)!) links.get(other)?.delete(worst.name);
    links.delete(worst.name);
  }

  const stable = view.now - newest >= options.stableAfterMs;
  const decisions: EvictionDecision[] = [];
  for (const member of removed) {
    const reporters = [...suspicions].filter(([, suspects]) => suspects.has(member.name)).map(([name]) => name);
    const others = members.length - 1;
    if (reporters.length * 2 > others) {
      decisions.push({ name: member.name, incarnation: member.incarnation, reporters, reason: 'majority' });
    } else if (stable) {
      // Without a majority the reporters may be any member it has a broken link with.
      const linked = [...suspicions].filter(([name, suspects]) => name === member.name || suspects.has(member.name));
      const backers = reporters.length > 0 ? reporters : linked.map(([name]) => name);
      decisions.push({ name: member.name, incarnation: member.incarnation, reporters: backers, reason: 'stable' });
    }
  }
  return decisions;
}

/** Is `a` younger than `b` (joined later: higher incarnation; then the higher name)? */
function younger(a: NodeRecord, b: NodeRecord): boolean {
  if (a.incarnation !== b.incarnation) return a.incarnation > b.incarnation;
  return a.name > b.name;
}
