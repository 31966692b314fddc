/**
 * Cross-checks the pruned search against the plain Wing & Gong search and
 * against an independent brute-force enumeration of linearizations, on many
 * small random histories (linearizable or not).
 */
import { describe, expect, it } from 'vitest';
import {
  checkHistory,
  createRandom,
  type EntityValue,
  type HistoryEntry,
  simulateHistory,
} from '../../src/testing/checker/index.js';
import { isCompleted, type Operation, toOperations } from '../../src/testing/checker/operations.js';
import { searchLinearization } from '../../src/testing/checker/search.js';

const INITIAL: EntityValue = { state: 'initialized', version: 0 };

/** Applies one entry to the register, or undefined when it cannot take effect on this value. */
function step(value: EntityValue, entry: HistoryEntry): EntityValue | undefined {
  const { result } = entry;
  const same = (a: EntityValue | undefined, b: EntityValue): boolean =>
    a !== undefined && a.state === b.state && a.version === b.version;
  const written = { state: entry.value ?? '', version: value.version + 1 };
  if (entry.op === 'read') return same(result, value) ? value : undefined;
  if (entry.outcome === 'info') {
    return entry.op === 'write' || entry.expectedVersion === value.version ? written : undefined;
  }
  if (entry.op === 'write') return same(result, written) ? written : undefined;
  if (entry.outcome === 'ok')
    return entry.expectedVersion === value.version && same(result, written) ? written : undefined;
  // 412: the version differed; a reported current value must be the actual one.
  if (entry.expectedVersion === value.version) return undefined;
  return result === undefined || same(result, value) ? value : undefined;
}

/** Independent oracle: tries every order (unknown-outcome writes optional). Only for tiny histories. */
function bruteForce(history: readonly HistoryEntry[], initial: EntityValue): boolean {
  const ops = history.filter(
    (entry) => !(entry.op === 'read' && entry.outcome !== 'ok') && !(entry.op === 'write' && entry.outcome === 'fail'),
  );
  const required = ops.map((entry) => entry.outcome !== 'info');
  const used = ops.map(() => false);
  const mayGo = (i: number): boolean =>
    ops.every((other, j) => j === i || used[j] || !required[j] || !(other.completedAt! < ops[i]!.invokedAt));
  const search = (value: EntityValue, remaining: number): boolean => {
    if (remaining === 0) return true;
    for (let i = 0; i < ops.length; i++) {
      if (used[i] || !mayGo(i)) continue;
      const next = step(value, ops[i]!);
      if (next === undefined) continue;
      used[i] = true;
      const found = search(next, remaining - (required[i] ? 1 : 0));
      used[i] = false;
      if (found) return true;
    }
    return false;
  };
  return search(initial, required.filter((isRequired) => isRequired).length);
}

/** Replays a witness: every completed operation once, real-time order respected, every step legal. */
function verifyWitness(history: readonly HistoryEntry[], initial: EntityValue): void {
  const operations = toOperations(history.map((entry, index) => ({ entry, index })));
  const outcome = searchLinearization(operations, initial, {
    deadline: Number.POSITIVE_INFINITY,
    maxCacheEntries: 1e6,
    strategy: 'pruned',
  });
  expect(outcome.verdict).toBe('linearizable');
  if (outcome.verdict !== 'linearizable') return;
  const order = outcome.order;
  const completed: readonly Operation[] = operations.filter(isCompleted);
  expect(new Set(order.filter((op) => completed.includes(op))).size).toBe(completed.length);
  let value = initial;
  order.forEach((op, position) => {
    for (const later of order.slice(position + 1)) expect(later.completedAt < op.invokedAt).toBe(false);
    const next = step(value, op.entry);
    expect(next).toBeDefined();
    value = next!;
  });
}

const STATES = ['initialized', 'a', 'b'];

/** A fully random tiny history: mostly not linearizable, sometimes by accident it is. */
function randomHistory(random: () => number): HistoryEntry[] {
  const int = (max: number): number => Math.floor(random() * (max + 1));
  const count = 1 + int(6);
  const history: HistoryEntry[] = [];
  for (let i = 0; i < count; i++) {
    const invokedAt = int(12);
    const completedAt = invokedAt + int(6);
    const client = int(3);
    const kind = int(5);
    const value = STATES[1 + int(1)]!;
    const version = int(3);
    const key = 'k';
    if (kind <= 1) {
      history.push({
        key,
        client,
        op: 'read',
        invokedAt,
        completedAt,
        outcome: 'ok',
        result: { state: STATES[int(2)]!, version },
      });
    } else if (kind === 2) {
      const info = random() < 0.4;
      history.push(
        info
          ? { key, client, op: 'write', value, invokedAt, completedAt: null, outcome: 'info' }
          : {
              key,
              client,
              op: 'write',
              value,
              invokedAt,
              completedAt,
              outcome: 'ok',
              result: { state: value, version: 1 + int(2) },
            },
      );
    } else {
      const expectedVersion = int(2);
      const roll = random();
      if (roll < 0.3) {
        history.push({ key, client, op: 'cas', value, expectedVersion, invokedAt, completedAt: null, outcome: 'info' });
      } else if (roll < 0.6) {
        history.push({
          key,
          client,
          op: 'cas',
          value,
          expectedVersion,
          invokedAt,
          completedAt,
          outcome: 'ok',
          result: { state: value, version: expectedVersion + 1 },
        });
      } else {
        history.push({
          key,
          client,
          op: 'cas',
          value,
          expectedVersion,
          invokedAt,
          completedAt,
          outcome: 'fail',
          ...(random() < 0.5 ? { result: { state: STATES[int(2)]!, version: int(3) } } : {}),
        });
      }
    }
  }
  return history;
}

/**
 * Many unknown-outcome writes of few states, acknowledged writes with gaps
 * below them and reads of the gaps: exercises which unknown write fills which gap.
 */
function gapHeavyHistory(random: () => number): HistoryEntry[] {
  const int = (max: number): number => Math.floor(random() * (max + 1));
  const history: HistoryEntry[] = [];
  const key = 'k';
  const unknown = 2 + int(3);
  for (let i = 0; i < unknown; i++) {
    const value = STATES[1 + int(1)]!;
    history.push({ key, client: i, op: 'write', value, invokedAt: int(10), completedAt: null, outcome: 'info' });
  }
  const acknowledged = int(2);
  for (let i = 0; i < acknowledged; i++) {
    const value = `w${i}`;
    const invokedAt = int(12);
    const result = { state: value, version: 1 + int(4) };
    history.push({
      key,
      client: 10 + i,
      op: 'write',
      value,
      invokedAt,
      completedAt: invokedAt + int(4),
      outcome: 'ok',
      result,
    });
  }
  const reads = 1 + int(2);
  for (let i = 0; i < reads; i++) {
    const invokedAt = int(14);
    const result = { state: STATES[1 + int(1)]!, version: 1 + int(4) };
    history.push({
      key,
      client: 20 + i,
      op: 'read',
      invokedAt,
      completedAt: invokedAt + int(4),
      outcome: 'ok',
      result,
    });
  }
  return history;
}

/** A small simulated (linearizable) history, then sometimes one arbitrary, possibly harmless, change. */
function nearlyLinearizableHistory(seed: number, random: () => number): HistoryEntry[] {
  const { history } = simulateHistory({
    seed,
    operations: 3 + (seed % 6),
    clients: 2 + (seed % 3),
    infoRate: 0.3,
    stateAlphabet: seed % 2 === 0 ? 2 : undefined,
    guessRate: 0.6,
    maxLatency: 6,
    maxThink: 2,
    lateEffectFactor: 4,
  });
  if (random() < 0.3 || history.length === 0) return history;
  const index = Math.floor(random() * history.length);
  const entry = history[index]!;
  const change = Math.floor(random() * 4);
  if (change === 0 && entry.result !== undefined) {
    history[index] = {
      ...entry,
      result: { ...entry.result, version: Math.max(0, entry.result.version + (random() < 0.5 ? -1 : 1)) },
    };
  } else if (change === 1 && entry.completedAt !== null) {
    history[index] = { ...entry, invokedAt: Math.max(0, entry.invokedAt - 5), completedAt: entry.completedAt + 5 };
  } else if (change === 2 && entry.op !== 'read' && entry.outcome === 'ok') {
    history[index] = {
      key: entry.key,
      client: entry.client,
      op: entry.op,
      value: entry.value ?? '',
      ...(entry.op === 'cas' ? { expectedVersion: entry.expectedVersion ?? 0 } : {}),
      invokedAt: entry.invokedAt,
      completedAt: null,
      outcome: 'info',
    };
  } else if (change === 3 && entry.op === 'cas') {
    history[index] = { ...entry, expectedVersion: (entry.expectedVersion ?? 0) + 1 };
  }
  return history;
}

function compare(history: HistoryEntry[], label: string): boolean {
  const expected = bruteForce(history, INITIAL);
  const pruned = checkHistory(history, { shrinkTimeoutMs: 1_000 });
  const plain = checkHistory(history, { strategy: 'plain', shrink: false });
  if (pruned.ok !== expected || plain.ok !== expected) {
    console.log(label, { expected, pruned: pruned.ok, plain: plain.ok }, JSON.stringify(history));
  }
  expect(pruned.ok).toBe(expected);
  expect(plain.ok).toBe(expected);
  if (expected) verifyWitness(history, INITIAL);
  return expected;
}

describe('pruned search agrees with plain search and brute force', () => {
  it('on fully random tiny histories', () => {
    const random = createRandom(2024);
    let linearizable = 0;
    const total = 4000;
    for (let i = 0; i < total; i++) if (compare(randomHistory(random), `random #${i}`)) linearizable++;
    console.log(`random histories: ${linearizable} of ${total} linearizable`);
    expect(linearizable).toBeGreaterThan(100);
    expect(linearizable).toBeLessThan(total - 100);
  });

  it('on gap-heavy histories (many unknown writes of few states)', () => {
    const random = createRandom(5);
    let linearizable = 0;
    const total = 3000;
    for (let i = 0; i < total; i++) if (compare(gapHeavyHistory(random), `gap-heavy #${i}`)) linearizable++;
    console.log(`gap-heavy histories: ${linearizable} of ${total} linearizable`);
    expect(linearizable).toBeGreaterThan(300);
    expect(linearizable).toBeLessThan(total - 300);
  });

  it('on small simulated histories with one arbitrary change', () => {
    const random = createRandom(77);
    let linearizable = 0;
    const total = 3000;
    for (let seed = 0; seed < total; seed++) {
      if (compare(nearlyLinearizableHistory(seed, random), `simulated seed ${seed}`)) linearizable++;
    }
    console.log(`simulated histories: ${linearizable} of ${total} linearizable`);
    expect(linearizable).toBeGreaterThan(total / 3);
    expect(linearizable).toBeLessThan(total);
  });
});

describe('pruned search agrees with plain search', () => {
  it('on medium simulated histories (too big for brute force)', () => {
    const random = createRandom(99);
    let compared = 0;
    let linearizable = 0;
    for (let seed = 0; seed < 400; seed++) {
      const history = nearlyLinearizableHistory(10_000 + seed, random);
      const { history: more } = simulateHistory({
        seed,
        operations: 10 + (seed % 15),
        clients: 3,
        infoRate: 0.15,
        stateAlphabet: seed % 3 === 0 ? 2 : undefined,
        maxLatency: 8,
      });
      for (const candidate of [history, more]) {
        const plain = checkHistory(candidate, { strategy: 'plain', shrink: false, timeoutMs: 2_000 });
        if (plain.ok === 'unknown') continue;
        const pruned = checkHistory(candidate, { shrinkTimeoutMs: 1_000 });
        if (pruned.ok !== plain.ok) console.log(`seed ${seed}`, JSON.stringify(candidate));
        expect(pruned.ok).toBe(plain.ok);
        compared++;
        if (plain.ok) linearizable++;
      }
    }
    console.log(`medium histories: ${compared} compared, ${linearizable} linearizable`);
    expect(compared).toBeGreaterThan(700);
  });
});
