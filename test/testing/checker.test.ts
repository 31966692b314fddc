import { describe, expect, it } from 'vitest';
import {
  type CheckOptions,
  type CheckResult,
  checkHistory,
  type EntityValue,
  formatReport,
  type HistoryEntry,
  InvalidHistoryError,
  simulateHistory,
  validateHistory,
} from '../../src/testing/checker/index.js';

// ---- history builders --------------------------------------------------------------------

type Window = readonly [invokedAt: number, completedAt: number];

function read(client: number, [invokedAt, completedAt]: Window, state: string, version: number): HistoryEntry {
  return { key: 'k', client, op: 'read', invokedAt, completedAt, outcome: 'ok', result: { state, version } };
}

function write(client: number, [invokedAt, completedAt]: Window, value: string, version: number): HistoryEntry {
  return {
    key: 'k',
    client,
    op: 'write',
    value,
    invokedAt,
    completedAt,
    outcome: 'ok',
    result: { state: value, version },
  };
}

/** A write whose outcome the client never learned. */
function writeInfo(client: number, invokedAt: number, value: string): HistoryEntry {
  return { key: 'k', client, op: 'write', value, invokedAt, completedAt: null, outcome: 'info' };
}

/** A successful cas: returns (value, expected + 1) unless `version` says otherwise. */
function cas(
  client: number,
  [invokedAt, completedAt]: Window,
  value: string,
  expectedVersion: number,
  version = expectedVersion + 1,
): HistoryEntry {
  return {
    key: 'k',
    client,
    op: 'cas',
    value,
    expectedVersion,
    invokedAt,
    completedAt,
    outcome: 'ok',
    result: { state: value, version },
  };
}

/** A cas rejected with 412, optionally reporting the current value. */
function casRejected(
  client: number,
  [invokedAt, completedAt]: Window,
  value: string,
  expectedVersion: number,
  current?: EntityValue,
): HistoryEntry {
  return {
    key: 'k',
    client,
    op: 'cas',
    value,
    expectedVersion,
    invokedAt,
    completedAt,
    outcome: 'fail',
    ...(current === undefined ? {} : { result: current }),
  };
}

function casInfo(client: number, invokedAt: number, value: string, expectedVersion: number): HistoryEntry {
  return { key: 'k', client, op: 'cas', value, expectedVersion, invokedAt, completedAt: null, outcome: 'info' };
}

function onKey(key: string, entries: readonly HistoryEntry[]): HistoryEntry[] {
  return entries.map((entry) => ({ ...entry, key }));
}

/** Checks and, on failure, also checks that the reported witness fails on its own. */
function check(history: readonly HistoryEntry[], options?: CheckOptions): CheckResult {
  const result = checkHistory(history, options);
  for (const key of result.keys) {
    if (key.failure === undefined) continue;
    expect(key.failure.minimalHistory.length).toBeGreaterThan(0);
    const alone = checkHistory(key.failure.minimalHistory, { ...options, shrink: false });
    expect(alone.ok).toBe(false);
  }
  return result;
}

function failureOf(result: CheckResult, key = 'k') {
  const keyResult = result.keys.find((candidate) => candidate.key === key);
  expect(keyResult?.ok).toBe(false);
  return keyResult!.failure!;
}

// ---- violations that must be caught -------------------------------------------------------

describe('checkHistory catches', () => {
  it('a stale read (an older version after a newer write completed)', () => {
    const history = [
      write(1, [0, 10], 'a', 1),
      write(1, [20, 30], 'b', 2),
      read(2, [40, 50], 'a', 1),
      read(3, [45, 60], 'b', 2),
    ];
    const result = check(history);
    expect(result.ok).toBe(false);
    const failure = failureOf(result);
    expect(failure.explanation).toMatch(/^Stale read: read by client 2 \(t=40\.\.50\) returned \("a", v1\)/);
    expect(failure.explanation).toContain('v2 had already been acknowledged at t=30');
    expect(failure.minimalHistory).toEqual([history[1], history[2]]);
    expect(failure.minimal).toBe(true);
  });

  it('a lost write (two acknowledged writes both returned version 1)', () => {
    const history = [write(1, [0, 10], 'a', 1), write(2, [5, 15], 'b', 1), read(3, [20, 30], 'b', 1)];
    const result = check(history);
    const failure = failureOf(result);
    expect(failure.explanation).toContain('Version 1 was acknowledged twice');
    expect(failure.minimalHistory).toEqual([history[0], history[1]]);
  });

  it('two acknowledgements of one version by a write and a cas', () => {
    const history = [write(1, [0, 10], 'a', 1), write(1, [11, 20], 'b', 2), cas(2, [30, 40], 'c', 1)];
    const failure = failureOf(check(history));
    expect(failure.explanation).toContain('Version 2 was acknowledged twice');
  });

  it('a read returning a state/version pair that no write produced', () => {
    const unknownState = [write(1, [0, 10], 'a', 1), read(2, [20, 30], 'zzz', 2)];
    const failure = failureOf(check(unknownState));
    expect(failure.explanation).toContain('no write of that state appears in the history');
    expect(failure.minimalHistory).toEqual([unknownState[1]]);

    const wrongPair = [write(1, [0, 10], 'a', 1), write(1, [20, 30], 'b', 2), read(2, [40, 50], 'a', 2)];
    expect(failureOf(check(wrongPair)).explanation).toContain('v2 was produced by another state');

    const wrongInitial = [read(2, [0, 5], 'something', 0)];
    expect(failureOf(check(wrongInitial)).explanation).toContain('initial value');

    // The only write of "late" started after the read had already returned it.
    const fromTheFuture = [read(2, [0, 5], 'late', 1), writeInfo(1, 6, 'late')];
    expect(check(fromTheFuture).ok).toBe(false);
  });

  it('a read from the future (returns a version whose write began after the read ended)', () => {
    const history = [read(2, [0, 5], 'a', 1), write(1, [10, 20], 'a', 1)];
    expect(failureOf(check(history)).explanation).toMatch(/^Read from the future/);
  });

  it('reads that go backwards', () => {
    const history = [write(1, [0, 100], 'a', 1), read(2, [10, 20], 'a', 1), read(3, [30, 40], 'initialized', 0)];
    expect(failureOf(check(history)).explanation).toMatch(/^Reads went backwards/);
  });

  it('a successful cas against the wrong version', () => {
    // Acknowledged as v1 although v1 was already taken.
    expect(check([write(1, [0, 10], 'a', 1), cas(2, [20, 30], 'b', 0)]).ok).toBe(false);
    // A cas must produce expected + 1.
    const skipped = failureOf(check([cas(2, [20, 30], 'b', 0, 3)]));
    expect(skipped.explanation).toContain('must produce v1');
    // The version was observably 1 (an unknown write landed) when the cas claimed to apply at 0.
    const observed = [writeInfo(1, 0, 'a'), read(3, [5, 8], 'a', 1), cas(2, [20, 30], 'c', 0)];
    expect(check(observed).ok).toBe(false);
    // Expected v1 while the key was provably at v2 throughout.
    const stale = [
      write(1, [0, 10], 'a', 1),
      write(1, [11, 20], 'b', 2),
      cas(2, [30, 40], 'c', 1),
      read(3, [50, 60], 'c', 2),
    ];
    expect(check(stale).ok).toBe(false);
  });

  it('a 412 against what must have been the right version', () => {
    const history = [write(1, [0, 10], 'a', 1), casRejected(2, [20, 30], 'x', 1), write(1, [40, 50], 'b', 2)];
    const failure = failureOf(check(history));
    expect(failure.explanation).toContain('the version was v1 for its whole duration');
    expect(failure.explanation).toContain('started only after it completed (write of "b" by client 1 (t=40..50)');
    // The later write need not be acknowledged to prove the point: it only had to start late.
    expect(failure.minimalHistory).toEqual([history[0], history[1]]);

    // Alone on a fresh key: the version was the initial one throughout.
    expect(check([casRejected(2, [0, 10], 'x', 0)]).ok).toBe(false);
    // A 412 that reports the expected version contradicts itself.
    expect(check([casRejected(2, [0, 10], 'x', 0, { state: 'initialized', version: 0 })]).ok).toBe(false);
  });

  it('an acknowledged version with more missing versions below it than unknown writes to fill them', () => {
    const history = [writeInfo(1, 0, 'a'), read(2, [10, 20], 'a', 1), write(3, [30, 40], 'b', 3)];
    const failure = failureOf(check(history));
    expect(failure.minimalHistory).toEqual([history[2]]);
    expect(failure.explanation).toMatch(/^Write of "b" by client 3 \(t=30\.\.40\) was acknowledged as \("b", v3\)/);
    expect(failure.explanation).toContain('no unknown-outcome write was left');
  });

  it('a state observed at a version its only unknown write cannot have produced', () => {
    const history = [
      writeInfo(1, 0, 'a'),
      read(2, [10, 20], 'a', 1),
      write(3, [22, 28], 'b', 2),
      read(2, [30, 40], 'a', 3),
    ];
    const failure = failureOf(check(history));
    // Even with the acknowledged write weakened to "maybe", three versions need three writes: the read alone proves it.
    expect(failure.minimalHistory).toEqual([history[3]]);
    expect(failure.explanation).toContain('every unknown-outcome write of "a" that could have produced it');
    // With a second unknown write of "a" it is fine.
    expect(check([...history, writeInfo(4, 5, 'a')]).ok).toBe(true);
  });

  it('a violation on one key among many passing keys', () => {
    const history: HistoryEntry[] = [];
    for (let key = 0; key < 50; key++) {
      history.push(...onKey(`entity-${key}`, [write(1, [0, 10], `v${key}`, 1), read(2, [20, 30], `v${key}`, 1)]));
    }
    history.push(...onKey('entity-17', [read(3, [40, 50], 'initialized', 0)]));
    const result = check(history);
    expect(result.ok).toBe(false);
    expect(result.keys).toHaveLength(50);
    expect(result.keys.filter((key) => key.ok === false).map((key) => key.key)).toEqual(['entity-17']);
  });
});

// ---- linearizable histories that must pass ------------------------------------------------

describe('checkHistory accepts', () => {
  it('concurrent writes in either order', () => {
    expect(check([write(1, [0, 10], 'a', 1), write(2, [0, 10], 'b', 2)]).ok).toBe(true);
    expect(check([write(1, [0, 10], 'a', 2), write(2, [0, 10], 'b', 1)]).ok).toBe(true);
    // Touching windows count as concurrent.
    expect(check([write(1, [0, 10], 'a', 2), write(2, [10, 20], 'b', 1)]).ok).toBe(true);
  });

  it('reads concurrent with a write seeing either value', () => {
    const history = [
      write(1, [0, 10], 'a', 1),
      write(1, [20, 40], 'b', 2),
      read(2, [25, 30], 'b', 2),
      read(3, [25, 35], 'a', 1),
      read(4, [15, 45], 'a', 1),
      read(5, [41, 50], 'b', 2),
    ];
    expect(check(history).ok).toBe(true);
  });

  it('an unknown write that took effect (a later read sees it)', () => {
    expect(check([writeInfo(1, 0, 'a'), read(2, [100, 110], 'a', 1)]).ok).toBe(true);
    expect(check([writeInfo(1, 0, 'a'), write(2, [20, 30], 'b', 2), read(3, [40, 50], 'b', 2)]).ok).toBe(true);
  });

  it('an unknown write that did not take effect', () => {
    const history = [
      writeInfo(1, 0, 'a'),
      read(2, [100, 110], 'initialized', 0),
      write(3, [120, 130], 'b', 1),
      read(2, [140, 150], 'b', 1),
    ];
    expect(check(history).ok).toBe(true);
  });

  it('an unknown write that takes effect much later', () => {
    const history = [
      writeInfo(1, 0, 'late'),
      write(2, [20, 30], 'b', 1),
      read(3, [40, 50], 'b', 1),
      read(3, [10_000, 10_010], 'late', 2),
    ];
    expect(check(history).ok).toBe(true);
  });

  it('unknown cas operations that did and did not apply', () => {
    const history = [
      casInfo(1, 0, 'a', 0),
      casInfo(2, 5, 'never', 7),
      read(3, [20, 30], 'a', 1),
      casInfo(1, 40, 'b', 1),
      read(3, [50, 60], 'a', 1),
    ];
    expect(check(history).ok).toBe(true);
  });

  it('412s that were justified, with or without the current value', () => {
    const history = [
      write(1, [0, 10], 'a', 1),
      casRejected(2, [20, 30], 'x', 0),
      casRejected(3, [20, 30], 'x', 5, { state: 'a', version: 1 }),
    ];
    expect(check(history).ok).toBe(true);
    // Concurrent with the write that moved the key past v0.
    expect(check([write(1, [0, 10], 'a', 1), casRejected(4, [5, 15], 'x', 0)]).ok).toBe(true);
  });

  it('an empty history', () => {
    const result = check([]);
    expect(result.ok).toBe(true);
    expect(result.keys).toEqual([]);
  });

  it('many keys', () => {
    const history: HistoryEntry[] = [];
    for (let key = 0; key < 200; key++) {
      history.push(
        ...onKey(`entity-${key}`, [
          write(1, [0, 10], `a${key}`, 1),
          cas(2, [5, 20], `b${key}`, 1),
          read(3, [25, 30], `b${key}`, 2),
        ]),
      );
    }
    const result = check(history);
    expect(result.ok).toBe(true);
    expect(result.keys).toHaveLength(200);
    expect(result.keys.every((key) => key.operations === 3)).toBe(true);
  });

  it('a configurable initial value', () => {
    const history = [read(1, [0, 5], 'seeded', 7), cas(2, [10, 20], 'x', 7), read(1, [30, 40], 'x', 8)];
    expect(check(history, { initialValue: { state: 'seeded', version: 7 } }).ok).toBe(true);
    expect(check(history, { initialValue: (key) => ({ state: 'seeded', version: key === 'k' ? 7 : 0 }) }).ok).toBe(
      true,
    );
    expect(check(history).ok).toBe(false);
  });

  it('ignores reads with unknown outcomes and rejected writes', () => {
    const history: HistoryEntry[] = [
      { key: 'k', client: 1, op: 'read', invokedAt: 0, completedAt: null, outcome: 'info' },
      { key: 'k', client: 1, op: 'write', value: 'bad', invokedAt: 0, completedAt: 3, outcome: 'fail' },
      read(2, [5, 6], 'initialized', 0),
    ];
    const result = check(history);
    expect(result.ok).toBe(true);
    expect(result.keys[0]?.operations).toBe(3);
  });
});

// ---- bounds, validation, report -----------------------------------------------------------

describe('checkHistory', () => {
  it('reports unknown (never a pass) when a key exceeds its time budget', () => {
    const { history } = simulateHistory({ seed: 7, operations: 3000, clients: 16 });
    const result = checkHistory(history, { timeoutMs: 0 });
    expect(result.ok).toBe('unknown');
    expect(result.keys[0]?.unknownReason).toMatch(/timed out/);
    expect(formatReport(result)).toContain('UNKNOWN');
  });

  it('reports unknown when the search cache hits its memory bound', () => {
    // The plain search caches every configuration; a tiny bound trips it.
    const { history } = simulateHistory({ seed: 3, operations: 40, clients: 4 });
    const result = checkHistory(history, { strategy: 'plain', maxCacheBytes: 1 });
    expect(result.ok).toBe('unknown');
    expect(result.keys[0]?.unknownReason).toMatch(/cache/);
  });

  it('can skip shrinking and can run the unpruned reference search', () => {
    const history = [write(1, [0, 10], 'a', 1), write(1, [20, 30], 'b', 2), read(2, [40, 50], 'a', 1)];
    const unshrunk = checkHistory(history, { shrink: false });
    expect(unshrunk.ok).toBe(false);
    expect(unshrunk.keys[0]?.failure?.shrunk).toBe(false);
    expect(unshrunk.keys[0]?.failure?.minimalHistory).toEqual(history);
    expect(unshrunk.keys[0]?.failure?.explanation).toMatch(/^Stale read/);
    expect(formatReport(unshrunk)).toContain('(not shrunk)');
    expect(checkHistory(history, { strategy: 'plain' }).ok).toBe(false);
    expect(checkHistory(history.slice(0, 2), { strategy: 'plain' }).ok).toBe(true);
  });

  it('rejects malformed histories with every problem listed', () => {
    const bad = [
      {
        key: 'k',
        client: 1,
        op: 'write',
        invokedAt: 0,
        completedAt: 5,
        outcome: 'ok',
        result: { state: 'a', version: 1 },
      },
      {
        key: 'k',
        client: 1,
        op: 'read',
        invokedAt: 10,
        completedAt: 5,
        outcome: 'ok',
        result: { state: 'a', version: 1 },
      },
      { key: 'k', client: 1, op: 'cas', value: 'x', invokedAt: 0, completedAt: null, outcome: 'ok' },
      { key: 3, client: 1, op: 'delete', invokedAt: 0, completedAt: 1, outcome: 'maybe' },
    ];
    const problems = validateHistory(bad);
    expect(problems.map((problem) => problem.index)).toEqual([0, 1, 2, 2, 2, 3, 3, 3]);
    expect(() => checkHistory(bad as unknown as HistoryEntry[])).toThrow(InvalidHistoryError);
  });

  it('formats a report with verdicts and an aligned minimal sub-history', () => {
    const history = [
      ...onKey('fine', [write(1, [0, 10], 'a', 1)]),
      write(1, [0, 10], 'a', 1),
      write(1, [20, 30], 'b', 2),
      read(2, [40, 50], 'a', 1),
    ];
    const report = formatReport(checkHistory(history));
    console.log(report);
    expect(report).toMatch(
      /^Linearizability: FAIL — 2 key\(s\), 4 operation\(s\) \(0 with unknown outcome\), keys: 1 not linearizable, 0 undecided/,
    );
    expect(report).toMatch(/\n {2}OK {7}fine/);
    expect(report).toMatch(/\n {2}FAIL {5}k /);
    expect(report).toContain('Stale read');
    expect(report).toContain('Failing sub-history: 2 of 3 operation(s) (1-minimal');
    const table = report.split('\n').filter((line) => line.startsWith('      '));
    expect(table[0]).toMatch(/^ {6}# +client +operation +invoked +completed +outcome +result$/);
    expect(table[2]).toMatch(/^ {6}2 +1 +write "b" +20 +30 +ok +\("b", v2\)$/);
    expect(table[3]).toMatch(/^ {6}3 +2 +read +40 +50 +ok +\("a", v1\)$/);
    // Columns line up: every row has the same prefix width before "operation".
    const column = table[0]!.indexOf('operation');
    expect(table.slice(2).every((line) => line[column - 1] === ' ' && line[column] !== ' ')).toBe(true);
  });
});

// ---- randomized --------------------------------------------------------------------------

type Mutation = (history: HistoryEntry[], states: Map<string, string[]>, random: () => number) => boolean;

function pick<T>(items: readonly T[], random: () => number): T | undefined {
  return items[Math.floor(random() * items.length)];
}

function indicesWhere(history: readonly HistoryEntry[], predicate: (entry: HistoryEntry) => boolean): number[] {
  return history.flatMap((entry, index) => (predicate(entry) ? [index] : []));
}

const okRead = (entry: HistoryEntry): boolean => entry.op === 'read' && entry.outcome === 'ok';
const ack = (entry: HistoryEntry): boolean => entry.op !== 'read' && entry.outcome === 'ok';

/** Mutations that certainly make a linearizable history non-linearizable (false when not applicable). */
const mutations: Record<string, Mutation> = {
  'read version beyond any write': (history, _states, random) => {
    const index = pick(indicesWhere(history, okRead), random);
    if (index === undefined) return false;
    const entry = history[index]!;
    const writes = history.filter((other) => other.key === entry.key && other.op !== 'read').length;
    history[index] = { ...entry, result: { state: entry.result!.state, version: writes + 1 } };
    return true;
  },
  'read of a state never written': (history, _states, random) => {
    const index = pick(indicesWhere(history, okRead), random);
    if (index === undefined) return false;
    const entry = history[index]!;
    history[index] = { ...entry, result: { state: 'never-written', version: entry.result!.version } };
    return true;
  },
  'stale read after an acknowledged write': (history, states, random) => {
    const reads = indicesWhere(history, okRead);
    for (let attempt = 0; attempt < 20; attempt++) {
      const readIndex = pick(reads, random);
      if (readIndex === undefined) return false;
      const entry = history[readIndex]!;
      const earlier = indicesWhere(
        history,
        (other) => ack(other) && other.key === entry.key && other.completedAt! < entry.invokedAt,
      );
      const writeIndex = pick(earlier, random);
      if (writeIndex === undefined) continue;
      // Reading the version just below one acknowledged before the read began is certainly stale.
      const version = history[writeIndex]!.result!.version - 1;
      history[readIndex] = { ...entry, result: { state: states.get(entry.key)![version]!, version } };
      return true;
    }
    return false;
  },
  'two acknowledgements of one version': (history, _states, random) => {
    const acks = indicesWhere(history, ack);
    const first = pick(acks, random);
    if (first === undefined) return false;
    const second = pick(
      acks.filter((index) => index !== first && history[index]!.key === history[first]!.key),
      random,
    );
    if (second === undefined) return false;
    const entry = history[second]!;
    const version = history[first]!.result!.version;
    // Keep the cas consistent with itself so that only the duplicate is wrong.
    history[second] = {
      ...entry,
      ...(entry.op === 'cas' ? { expectedVersion: version - 1 } : {}),
      result: { state: entry.result!.state, version },
    };
    return true;
  },
  'acknowledged with a state other than the one written': (history, _states, random) => {
    const index = pick(indicesWhere(history, ack), random);
    if (index === undefined) return false;
    const entry = history[index]!;
    history[index] = { ...entry, result: { state: `${entry.result!.state}-other`, version: entry.result!.version } };
    return true;
  },
};

describe('randomized histories from a sequential simulation', () => {
  const configurations = Array.from({ length: 60 }, (_, i) => ({
    seed: 1000 + i,
    operations: 40 + ((i * 37) % 400),
    clients: 2 + (i % 16),
    keys: i % 3 === 0 ? ['a', 'b', 'c'] : ['k'],
    infoRate: [0, 0.05, 0.2][i % 3]!,
    stateAlphabet: i % 4 === 1 ? 3 : undefined,
    maxLatency: i % 5 === 0 ? 60 : 20,
  }));

  it('accepts every simulated history', () => {
    for (const configuration of configurations) {
      const { history } = simulateHistory(configuration);
      const result = checkHistory(history);
      if (result.ok !== true) console.log(JSON.stringify(configuration), formatReport(result, { showPassing: false }));
      expect(result.ok).toBe(true);
    }
  });

  it('catches every certainly-observable mutation', () => {
    let caught = 0;
    for (const configuration of configurations) {
      for (const [name, mutate] of Object.entries(mutations)) {
        const { history, statesByKey } = simulateHistory(configuration);
        const random = simulateRandom(configuration.seed, name);
        if (!mutate(history, statesByKey, random)) continue;
        const result = check(history, { shrinkTimeoutMs: 2_000 });
        if (result.ok !== false) console.log(name, JSON.stringify(configuration));
        expect(result.ok).toBe(false);
        const failing = result.keys.filter((key) => key.ok === false);
        expect(failing).toHaveLength(1);
        // Shrunk witnesses are small: these mutations need at most a handful of operations.
        expect(failing[0]!.failure!.minimalHistory.length).toBeLessThanOrEqual(4);
        caught++;
      }
    }
    expect(caught).toBeGreaterThan(200);
  });
});

function simulateRandom(seed: number, salt: string): () => number {
  let state = seed;
  for (const char of salt) state = (Math.imul(state, 31) + char.charCodeAt(0)) >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 4294967296;
  };
}

// ---- performance -------------------------------------------------------------------------

describe('performance', () => {
  it('checks 5,000 operations on one key with 32 clients and 5% unknown outcomes quickly', () => {
    const { history } = simulateHistory({ seed: 42, operations: 5_000, clients: 32, infoRate: 0.05 });
    const info = history.filter((entry) => entry.outcome === 'info').length;
    const started = performance.now();
    const result = checkHistory(history);
    const elapsed = performance.now() - started;
    console.log(
      `5,000 ops / 32 clients / ${info} unknown outcomes: ${elapsed.toFixed(1)} ms ` +
        `(${result.keys[0]?.stats.nodes} configurations, ${result.keys[0]?.stats.backtracks} dead ends)`,
    );
    expect(result.ok).toBe(true);
    expect(elapsed).toBeLessThan(10_000);
  });

  it('finds and shrinks a violation in 5,000 operations quickly', () => {
    const { history, statesByKey } = simulateHistory({ seed: 43, operations: 5_000, clients: 32, infoRate: 0.05 });
    expect(mutations['stale read after an acknowledged write']!(history, statesByKey, simulateRandom(43, 'perf'))).toBe(
      true,
    );
    const started = performance.now();
    const result = checkHistory(history);
    const elapsed = performance.now() - started;
    const failure = failureOf(result);
    console.log(
      `5,000 ops with one stale read: ${elapsed.toFixed(1)} ms including shrinking to ` +
        `${failure.minimalHistory.length} operations\n${failure.explanation}`,
    );
    expect(failure.minimalHistory.length).toBeLessThanOrEqual(3);
    expect(elapsed).toBeLessThan(10_000);
  });

  it('finds and shrinks a violation among 5,000 operations with 4 states and 20% unknown outcomes', () => {
    const options = { seed: 45, operations: 5_000, clients: 64, infoRate: 0.2, stateAlphabet: 4 };
    const { history, statesByKey } = simulateHistory(options);
    expect(mutations['stale read after an acknowledged write']!(history, statesByKey, simulateRandom(45, 'perf'))).toBe(
      true,
    );
    const started = performance.now();
    const result = checkHistory(history);
    const elapsed = performance.now() - started;
    const failure = failureOf(result);
    console.log(
      `5,000 ops / 64 clients / 20% unknown / 4 states with one stale read: ${elapsed.toFixed(1)} ms, ` +
        `shrunk to ${failure.minimalHistory.length} operations`,
    );
    expect(failure.minimalHistory.length).toBeLessThanOrEqual(3);
    expect(elapsed).toBeLessThan(10_000);
  });

  it('checks 64 clients with a small state alphabet and 20% unknown outcomes', () => {
    const { history } = simulateHistory({
      seed: 44,
      operations: 5_000,
      clients: 64,
      infoRate: 0.2,
      stateAlphabet: 4,
    });
    const started = performance.now();
    const result = checkHistory(history);
    const elapsed = performance.now() - started;
    console.log(`5,000 ops / 64 clients / 20% unknown / 4 states: ${elapsed.toFixed(1)} ms`);
    expect(result.ok).toBe(true);
    expect(elapsed).toBeLessThan(10_000);
  });
});
