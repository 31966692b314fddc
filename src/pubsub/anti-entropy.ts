import { ConcordError } from '../errors.js';
import type { Confirmations } from './confirmations.js';
import { BUCKETS } from './digest.js';
import { compareVersions } from './hlc.js';
import type { MapState } from './map-state.js';
import { isWireEntry, isWireVersion, listOf, type WireEntry, type WireVersion } from './wire.js';

/**
 * Digest-based anti-entropy between two replicas of one map. Run by the lower-named node when
 * two nodes see each other (start, reconnect, healed partition), and by every node with every
 * peer each sync interval, so anything missed is repaired.
 *
 * One sync, initiated by A with B (requests `rm.sync`, step `s`):
 * 1. `root`: A sends its root fingerprint. Equal → done, and both record that the other holds
 *    everything they hold (tombstone collection). Otherwise B answers with its per-bucket
 *    fingerprints and counts (1024 buckets).
 * 2. `diff`, per group of differing buckets (≤ ~20k keys of both sides per round): A sends
 *    the versions it holds in them; B answers with its entries that A lacks or has older,
 *    the keys where A is newer (`w`), and purge notices for tombstones B already collected.
 * 3. A merges B's entries and sends the wanted entries back in `rm.push` messages.
 * Only the buckets that differ are listed, and only the entries that differ carry values.
 */

export interface SyncLink {
  request(peer: string, body: Record<string, unknown>, timeoutMs: number): Promise<unknown>;
  send(peer: string, body: Record<string, unknown>): boolean;
}

/** The map side of anti-entropy: merging what arrives. */
export interface Replica {
  readonly state: MapState<unknown>;
  /** Merge entries from `from`; returns purge notices for entries refused as already collected. */
  mergeWire(entries: readonly WireEntry[], from: string): WireVersion[];
  applyPurges(versions: readonly WireVersion[]): void;
}

export const SYNC_REQUEST = 'rm.sync';
export const SYNC_PUSH = 'rm.push';

const MAX_KEYS_PER_ROUND = 20_000;
const MAX_ENTRIES_PER_PUSH = 2_000;
/** Diff steps carry up to ~20k versions and entries: give them time. */
const DIFF_TIMEOUT_MS = 10_000;

export interface SyncOutcome {
  /** The replicas were already equal. */
  equal: boolean;
  /** Buckets that differed. */
  buckets: number;
  /** Entries received from the peer and pushed to it. */
  received: number;
  pushed: number;
}

export class AntiEntropy {
  constructor(
    private readonly mapName: string,
    private readonly replica: Replica,
    private readonly confirmations: Confirmations,
    private readonly link: SyncLink,
    /**
     * The root step is a few bytes each way. A short timeout matters: its frames may have been
     * lost in a partition that has healed since, and no new round starts while one runs.
     */
    private readonly rootTimeoutMs = 2000,
  ) {}

  private get state(): MapState<unknown> {
    return this.replica.state;
  }

  // ---- initiator ----------------------------------------------------------------------------

  async syncWith(peer: string): Promise<SyncOutcome> {
    const outcome: SyncOutcome = { equal: false, buckets: 0, received: 0, pushed: 0 };
    const { digest } = this.state;
    const seqAtSend = this.state.seq;
    const first = (await this.link.request(
      peer,
      { t: SYNC_REQUEST, m: this.mapName, s: 'root', h: [digest.root1, digest.root2] },
      this.rootTimeoutMs,
    )) as { eq?: unknown; h1?: unknown; h2?: unknown; n?: unknown } | null;
    if (first?.eq === true) {
      this.confirmations.confirmAll(peer, seqAtSend);
      outcome.equal = true;
      return outcome;
    }
    const theirs = bucketArrays(first);
    if (theirs === null) throw new ConcordError('BAD_MESSAGE', `malformed digest from ${peer}`);
    const seqAtCompare = this.state.seq;
    const equal: number[] = [];
    let differing: number[] = [];
    for (let b = 0; b < BUCKETS; b++) {
      if (digest.h1[b] === theirs.h1[b] && digest.h2[b] === theirs.h2[b]) equal.push(b);
      else differing.push(b);
    }
    this.confirmations.confirm(peer, equal, seqAtCompare);
    outcome.buckets = differing.length;

    // Buckets the peer has nothing in (typically a node that just joined): no need to compare.
    const empty = differing.filter((b) => theirs.n[b] === 0);
    if (empty.length > 0) {
      const entries: WireEntry[] = [];
      for (const b of empty) for (const key of this.state.keysIn(b)) entries.push(this.state.wire(key)!);
      this.push(peer, entries, []);
      outcome.pushed += entries.length;
      differing = differing.filter((b) => theirs.n[b] !== 0);
    }

    let i = 0;
    while (i < differing.length) {
      const group: number[] = [];
      let keys = 0;
      while (i < differing.length) {
        const b = differing[i]!;
        const cost = digest.counts[b]! + theirs.n[b]!;
        if (group.length > 0 && keys + cost > MAX_KEYS_PER_ROUND) break;
        group.push(b);
        keys += cost;
        i++;
      }
      const { received, pushed } = await this.reconcile(peer, group);
      outcome.received += received;
      outcome.pushed += pushed;
    }
    return outcome;
  }

  private async reconcile(peer: string, buckets: number[]): Promise<{ received: number; pushed: number }> {
    const answer = (await this.link.request(
      peer,
      { t: SYNC_REQUEST, m: this.mapName, s: 'diff', b: buckets, v: this.state.versionsIn(buckets) },
      DIFF_TIMEOUT_MS,
    )) as { e?: unknown; w?: unknown; p?: unknown } | null;
    const entries = listOf(answer?.e, isWireEntry);
    const wanted = listOf(answer?.w, (k: unknown): k is string => typeof k === 'string');
    const purges = listOf(answer?.p, isWireVersion);
    if (entries === null || wanted === null || purges === null) {
      throw new ConcordError('BAD_MESSAGE', `malformed diff answer from ${peer}`);
    }
    const notices = this.replica.mergeWire(entries, peer);
    this.replica.applyPurges(purges);
    const push: WireEntry[] = [];
    for (const key of wanted) {
      const entry = this.state.wire(key);
      if (entry !== undefined) push.push(entry);
      else {
        const purged = this.state.purgedVersion(key);
        if (purged !== undefined) notices.push(purged);
      }
    }
    this.push(peer, push, notices);
    return { received: entries.length, pushed: push.length };
  }

  private push(peer: string, entries: WireEntry[], purges: WireVersion[]): void {
    if (entries.length === 0 && purges.length === 0) return;
    for (let i = 0; i < Math.max(entries.length, 1); i += MAX_ENTRIES_PER_PUSH) {
      const body: Record<string, unknown> = {
        t: SYNC_PUSH,
        m: this.mapName,
        e: entries.slice(i, i + MAX_ENTRIES_PER_PUSH),
      };
      if (i === 0 && purges.length > 0) body.p = purges;
      this.link.send(peer, body);
    }
  }

  // ---- responder ----------------------------------------------------------------------------

  /** Answer one `rm.sync` request from `from`. */
  answer(from: string, body: Record<string, unknown>): unknown {
    switch (body.s) {
      case 'root':
        return this.answerRoot(from, body);
      case 'diff':
        return this.answerDiff(body);
      case 'ping':
        // A barrier: the connection is FIFO, so every update sent before this is applied.
        return true;
      default:
        throw new ConcordError('BAD_MESSAGE', 'unknown sync step');
    }
  }

  private answerRoot(from: string, body: Record<string, unknown>): unknown {
    const h = body.h;
    if (!Array.isArray(h) || h.length !== 2) throw new ConcordError('BAD_MESSAGE', 'malformed root digest');
    const { digest } = this.state;
    if (h[0] === digest.root1 && h[1] === digest.root2) {
      this.confirmations.confirmAll(from, this.state.seq);
      return { eq: true };
    }
    return { h1: Array.from(digest.h1), h2: Array.from(digest.h2), n: Array.from(digest.counts) };
  }

  private answerDiff(body: Record<string, unknown>): unknown {
    const buckets = listOf(
      body.b,
      (b: unknown): b is number => Number.isInteger(b) && (b as number) >= 0 && (b as number) < BUCKETS,
    );
    const versions = listOf(body.v, isWireVersion);
    if (buckets === null || versions === null) throw new ConcordError('BAD_MESSAGE', 'malformed diff request');
    const state = this.state;
    const send: WireEntry[] = [];
    const want: string[] = [];
    const purges: WireVersion[] = [];
    const listed = new Set<string>();
    for (const [key, l, c, o] of versions) {
      listed.add(key);
      const mine = state.entry(key);
      if (mine === undefined) {
        const purged = state.purgedVersion(key);
        if (purged !== undefined && compareVersions(purged[1], purged[2], purged[3], l, c, o) >= 0) purges.push(purged);
        else want.push(key);
        continue;
      }
      const order = compareVersions(mine.l, mine.c, mine.o, l, c, o);
      if (order > 0) send.push(state.wire(key)!);
      else if (order < 0) want.push(key);
    }
    for (const bucket of buckets) {
      for (const key of state.keysIn(bucket)) if (!listed.has(key)) send.push(state.wire(key)!);
    }
    return { e: send, w: want, p: purges };
  }

  /** An `rm.push` message: entries the initiator found we lack, and its purge notices. */
  onPush(from: string, body: Record<string, unknown>): void {
    const entries = listOf(body.e, isWireEntry) ?? [];
    const purges = listOf(body.p, isWireVersion) ?? [];
    const notices = this.replica.mergeWire(entries, from);
    this.replica.applyPurges(purges);
    // Entries we refused because we already collected their tombstone: let the sender collect too.
    if (notices.length > 0) this.link.send(from, { t: SYNC_PUSH, m: this.mapName, e: [], p: notices });
  }
}

function bucketArrays(
  answer: { h1?: unknown; h2?: unknown; n?: unknown } | null,
): { h1: number[]; h2: number[]; n: number[] } | null {
  if (answer === null) return null;
  const ok = (x: unknown): x is number[] => Array.isArray(x) && x.length === BUCKETS;
  if (!ok(answer.h1) || !ok(answer.h2) || !ok(answer.n)) return null;
  return { h1: answer.h1, h2: answer.h2, n: answer.n };
}
