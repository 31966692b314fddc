/**
 * A reference implementation to generate histories from: clients run
 * operations with random latencies against one correct, sequential register
 * per key; each operation takes effect at a random instant inside its
 * invocation–completion window (an unknown-outcome write possibly much
 * later, or never). The resulting histories are linearizable by construction,
 * which makes them useful to test the checker (and mutated, to test that it
 * catches violations).
 */

import type { ClientId, EntityValue, HistoryEntry, Outcome } from './history.js';

export interface SimulationOptions {
  readonly seed: number;
  /** Total operations across all clients and keys. */
  readonly operations: number;
  readonly clients: number;
  readonly keys?: readonly string[];
  readonly initialValue?: EntityValue;
  /** Relative weights of reads, writes and cas (default 4 : 3 : 3). */
  readonly mix?: { readonly read: number; readonly write: number; readonly cas: number };
  /** Fraction of operations whose outcome the client never learns (default 0.05). */
  readonly infoRate?: number;
  /** Probability that an unknown-outcome write/cas really took effect (default 0.5). */
  readonly infoEffectRate?: number;
  /** An unknown-outcome write may land up to this many latencies after its invocation (default 20). */
  readonly lateEffectFactor?: number;
  /** Fraction of writes rejected outright (400; no effect; default 0.01). */
  readonly rejectRate?: number;
  /** Probability that a 412 reports the current value (default 0.5). */
  readonly rejectReportsValueRate?: number;
  /** Probability that a cas expects a guessed rather than the last seen version (default 0.3). */
  readonly guessRate?: number;
  /** Latency range, integers (default 1..20). */
  readonly maxLatency?: number;
  /** Pause between a client's operations, integers (default 0..5). */
  readonly maxThink?: number;
  /** Draw states from this many values (default: every write writes a fresh state). */
  readonly stateAlphabet?: number;
}

export interface SimulatedHistory {
  /** Entries in invocation order. */
  readonly history: HistoryEntry[];
  /** Per key, the state of every version from the initial one on (index = version - initial version). */
  readonly statesByKey: Map<string, string[]>;
}

/** Small deterministic PRNG (mulberry32). */
export function createRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Planned {
  readonly client: number;
  readonly key: string;
  readonly op: 'read' | 'write' | 'cas';
  readonly outcome: 'ok' | 'info' | 'reject';
  readonly invokedAt: number;
  readonly completedAt: number;
  /** When the operation takes effect (or, for one without effect, when its parameters are chosen). */
  readonly point: number;
  readonly effective: boolean;
}

export function simulateHistory(options: SimulationOptions): SimulatedHistory {
  const random = createRandom(options.seed);
  const int = (min: number, max: number): number => min + Math.floor(random() * (max - min + 1));
  const keys = options.keys ?? ['k'];
  const initial = options.initialValue ?? { state: 'initialized', version: 0 };
  const mix = options.mix ?? { read: 4, write: 3, cas: 3 };
  const infoRate = options.infoRate ?? 0.05;
  const infoEffectRate = options.infoEffectRate ?? 0.5;
  const lateEffectFactor = options.lateEffectFactor ?? 20;
  const rejectRate = options.rejectRate ?? 0.01;
  const maxLatency = options.maxLatency ?? 20;
  const maxThink = options.maxThink ?? 5;

  // 1. Plan: every client runs operations one after the other.
  const clock = Array.from({ length: options.clients }, () => int(0, maxThink));
  const planned: Planned[] = [];
  for (let i = 0; i < options.operations; i++) {
    let client = 0;
    for (let c = 1; c < clock.length; c++) if (clock[c]! < clock[client]!) client = c;
    const invokedAt = clock[client]!;
    const latency = int(1, maxLatency);
    const completedAt = invokedAt + latency;
    const pick = random() * (mix.read + mix.write + mix.cas);
    const op = pick < mix.read ? 'read' : pick < mix.read + mix.write ? 'write' : 'cas';
    const outcome = random() < infoRate ? 'info' : op === 'write' && random() < rejectRate ? 'reject' : 'ok';
    const effective = outcome === 'ok' || (outcome === 'info' && op !== 'read' && random() < infoEffectRate);
    // Strictly inside the window so that equal timestamps stay concurrent.
    const window = outcome === 'info' ? latency * lateEffectFactor : latency;
    const point = invokedAt + (0.001 + 0.998 * random()) * window;
    planned.push({
      client,
      key: keys[int(0, keys.length - 1)]!,
      op,
      outcome,
      invokedAt,
      completedAt,
      point,
      effective,
    });
    clock[client] = completedAt + int(0, maxThink);
  }

  // 2. Run the register in the order of the effect points.
  const registers = new Map<string, EntityValue>(keys.map((key) => [key, initial]));
  const statesByKey = new Map<string, string[]>(keys.map((key) => [key, [initial.state]]));
  const lastSeen = new Map<string, number>();
  const order = planned.map((_, i) => i).sort((a, b) => planned[a]!.point - planned[b]!.point || a - b);
  const entries: HistoryEntry[] = new Array(planned.length);
  let written = 0;
  for (const i of order) {
    const plan = planned[i]!;
    const register = registers.get(plan.key)!;
    const seenKey = `${plan.client}\u0000${plan.key}`;
    const seen = lastSeen.get(seenKey) ?? initial.version;
    const client: ClientId = plan.client;
    const base = { key: plan.key, client, invokedAt: plan.invokedAt };
    const completedAt = plan.outcome === 'info' ? null : plan.completedAt;
    const outcome: Outcome = plan.outcome === 'reject' ? 'fail' : plan.outcome;
    const apply = (state: string): EntityValue => {
      const next = { state, version: register.version + 1 };
      registers.set(plan.key, next);
      statesByKey.get(plan.key)!.push(state);
      return next;
    };
    const observe = (value: EntityValue): void => {
      lastSeen.set(seenKey, value.version);
    };

    if (plan.op === 'read') {
      const result = plan.outcome === 'ok' ? register : undefined;
      if (result !== undefined) observe(result);
      entries[i] = { ...base, op: 'read', completedAt, outcome, ...(result === undefined ? {} : { result }) };
      continue;
    }
    written++;
    const value =
      options.stateAlphabet === undefined
        ? `${plan.key}:${plan.client}:${written}`
        : `s${int(1, options.stateAlphabet)}`;
    if (plan.op === 'write') {
      const result = plan.effective ? apply(value) : undefined;
      if (plan.outcome === 'ok' && result !== undefined) {
        observe(result);
        entries[i] = { ...base, op: 'write', value, completedAt, outcome, result };
      } else {
        entries[i] = { ...base, op: 'write', value, completedAt, outcome };
      }
      continue;
    }
    const guessRate = options.guessRate ?? 0.3;
    const expectedVersion = random() < guessRate ? Math.max(initial.version, seen + int(-2, 2)) : seen;
    const matches = register.version === expectedVersion;
    if (plan.outcome === 'info') {
      if (plan.effective && matches) apply(value);
      entries[i] = { ...base, op: 'cas', value, expectedVersion, completedAt, outcome: 'info' };
    } else if (matches) {
      const result = apply(value);
      observe(result);
      entries[i] = { ...base, op: 'cas', value, expectedVersion, completedAt, outcome: 'ok', result };
    } else if (random() < (options.rejectReportsValueRate ?? 0.5)) {
      observe(register);
      entries[i] = { ...base, op: 'cas', value, expectedVersion, completedAt, outcome: 'fail', result: register };
    } else {
      entries[i] = { ...base, op: 'cas', value, expectedVersion, completedAt, outcome: 'fail' };
    }
  }
  const history = entries
    .map((entry, i) => ({ entry, i }))
    .sort((a, b) => a.entry.invokedAt - b.entry.invokedAt || a.i - b.i)
    .map(({ entry }) => entry);
  return { history, statesByKey };
}
