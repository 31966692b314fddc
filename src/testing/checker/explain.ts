/**
 * Plain-English explanations of why a (shrunk) key history is not
 * linearizable. The explanation names the operations involved with their
 * clients and times, e.g. "Stale read: read by client 3 (t=120..135) returned
 * ('b', v3), but v4 had already been acknowledged at t=110 …".
 */

import type { EntityValue } from './history.js';
import type { CompletedOperation, ObserveOperation, Operation } from './operations.js';
import type { StructuralProblem, StuckReason } from './search.js';

export function formatTime(time: number): string {
  if (!Number.isFinite(time)) return '∞';
  return Number.isInteger(time) ? String(time) : String(Number(time.toFixed(3)));
}

export function formatValue(value: EntityValue): string {
  return `(${JSON.stringify(value.state)}, v${value.version})`;
}

function span(op: Operation): string {
  const end = Number.isFinite(op.completedAt) ? formatTime(op.completedAt) : '?';
  return `t=${formatTime(op.invokedAt)}..${end}`;
}

/** One operation in a sentence, e.g. `write of "x" by client 2 (t=10..20) was acknowledged as v3`. */
export function describeOperation(op: Operation): string {
  const who = `by client ${String(op.entry.client)} (${span(op)})`;
  switch (op.kind) {
    case 'observe':
      if (op.expected === undefined) return `read ${who} returned ${formatValue(op)}`;
      return `cas of ${JSON.stringify(op.entry.value ?? '')} expecting v${op.expected} ${who} was rejected (412) reporting ${formatValue(op)}`;
    case 'reject':
      return `cas of ${JSON.stringify(op.entry.value ?? '')} expecting v${op.expected} ${who} was rejected (412)`;
    case 'ack':
      if (op.expected === undefined) {
        return `write of ${JSON.stringify(op.written)} ${who} was acknowledged as ${formatValue(op)}`;
      }
      return `cas of ${JSON.stringify(op.written)} expecting v${op.expected} ${who} was acknowledged as ${formatValue(op)}`;
    case 'maybeWrite':
      return `write of ${JSON.stringify(op.written)} ${who} has an unknown outcome`;
    case 'maybeCas':
      return `cas of ${JSON.stringify(op.written)} expecting v${op.expected} ${who} has an unknown outcome`;
  }
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function explainProblem(problem: StructuralProblem, initial: EntityValue, context: readonly Operation[]): string {
  switch (problem.kind) {
    case 'ack-state':
      return `${capitalize(describeOperation(problem.op))}, but it asked to write ${JSON.stringify(problem.op.written)}.`;
    case 'cas-version':
      return `${capitalize(describeOperation(problem.op))}, but a successful cas expecting v${problem.op.expected} must produce v${(problem.op.expected ?? 0) + 1}.`;
    case 'ack-not-after-initial':
      return `${capitalize(describeOperation(problem.op))}, but the key starts at v${initial.version} and every write produces a higher version.`;
    case 'duplicate-ack':
      return (
        `Version ${problem.first.version} was acknowledged twice: ${describeOperation(problem.first)}, and ` +
        `${describeOperation(problem.second)}. Every successful write bumps the version by exactly one, ` +
        `so one of these writes was lost.`
      );
    case 'observe-before-initial':
      return `${capitalize(describeOperation(problem.op))}, but the key starts at v${initial.version}.`;
    case 'observe-initial-mismatch':
      return `${capitalize(describeOperation(problem.op))}, but v${initial.version} is the initial value ${formatValue(initial)}.`;
    case 'observe-ack-mismatch':
      return `${capitalize(describeOperation(problem.op))}, but v${problem.ack.version} was produced by another state: ${describeOperation(problem.ack)}.`;
    case 'observe-conflict':
      return `Two different states were observed for v${problem.first.version}: ${describeOperation(problem.first)}, and ${describeOperation(problem.second)}.`;
    case 'reject-reports-expected':
      return `${capitalize(describeOperation(problem.op))}: a 412 means the version was not v${problem.op.expected}, yet it reported exactly that version.`;
    case 'unproducible':
      return explainUnproducible(problem.op, context);
  }
}

/** Writes in `context` that wrote `state` (acknowledged or not), earliest invocation first. */
function writesOf(state: string, context: readonly Operation[]): Operation[] {
  return context
    .filter((op) => (op.kind === 'ack' || op.kind === 'maybeWrite' || op.kind === 'maybeCas') && op.written === state)
    .sort((a, b) => a.invokedAt - b.invokedAt || a.id - b.id);
}

function explainUnproducible(op: ObserveOperation, context: readonly Operation[]): string {
  const what = op.expected === undefined ? 'the read' : 'the cas';
  const completed = formatTime(op.completedAt);
  const first = writesOf(op.state, context)[0];
  if (first !== undefined && first.invokedAt > op.completedAt) {
    return (
      `Read from the future: ${describeOperation(op)}, but no acknowledged write produced v${op.version} and the ` +
      `earliest write of ${JSON.stringify(op.state)} (${describeOperation(first)}) was only invoked after ${what} ` +
      `had completed at t=${completed}.`
    );
  }
  const exists = first === undefined ? ' (no write of that state appears in the history)' : '';
  return (
    `${capitalize(describeOperation(op))}, but no acknowledged write produced v${op.version} and no write of ` +
    `${JSON.stringify(op.state)} that could have produced v${op.version} was invoked before ${what} completed at ` +
    `t=${completed}${exists}.`
  );
}

/** Version an operation pins at its linearization point, if any (writes: the version they produce). */
function pinnedVersion(op: CompletedOperation): number | undefined {
  return op.kind === 'reject' ? undefined : op.version;
}

/** Two operations in real-time order whose versions contradict it. */
function explainOrder(ops: readonly CompletedOperation[]): string | undefined {
  for (const later of ops) {
    for (const earlier of ops) {
      if (!(earlier.completedAt < later.invokedAt)) continue;
      const before = pinnedVersion(earlier);
      const after = pinnedVersion(later);
      if (before === undefined || after === undefined) continue;
      const at = formatTime(earlier.completedAt);
      if (earlier.kind === 'ack' && later.kind === 'ack' && before > after) {
        return (
          `${capitalize(describeOperation(later))}, but it was invoked after v${before} had already been acknowledged ` +
          `at t=${at} (${describeOperation(earlier)}); versions only grow, so it cannot have produced a lower version.`
        );
      }
      if (earlier.kind === 'ack' && later.kind === 'observe' && before > after) {
        return (
          `Stale read: ${describeOperation(later)}, but v${before} had already been acknowledged at t=${at}, ` +
          `before it began (${describeOperation(earlier)}).`
        );
      }
      if (earlier.kind === 'observe' && later.kind === 'observe' && before > after) {
        return (
          `Reads went backwards: ${describeOperation(later)}, but an earlier read that completed at t=${at} ` +
          `had already returned v${before} (${describeOperation(earlier)}).`
        );
      }
      if (earlier.kind === 'observe' && later.kind === 'ack' && before >= after) {
        if (before === after) {
          return (
            `Read from the future: ${describeOperation(earlier)}, but v${after} was produced by the ` +
            `${describeOperation(later)}, which was only invoked after the read had completed.`
          );
        }
        return (
          `${capitalize(describeOperation(earlier))}, yet the ${describeOperation(later)}, invoked after the read ` +
          `had completed, produced the lower version v${after}.`
        );
      }
    }
  }
  return undefined;
}

/**
 * Could `op` have produced version `expected + 1`? Acknowledged writes outside
 * the sub-history only count as "may have happened", like in the shrinking.
 */
function couldProduceNext(op: Operation, expected: number, kept: ReadonlySet<number>): boolean {
  switch (op.kind) {
    case 'ack':
      if (kept.has(op.id)) return op.version === expected + 1;
      return op.expected === undefined || op.expected === expected;
    case 'maybeWrite':
      return true;
    case 'maybeCas':
      return op.expected === expected;
    default:
      return false;
  }
}

/** A 412 whose whole duration provably sat on the expected version. */
function explainReject(
  ops: readonly CompletedOperation[],
  context: readonly Operation[],
  initial: EntityValue,
): string | undefined {
  for (const reject of ops) {
    if (reject.kind !== 'reject') continue;
    // The version during the 412 is at least what was in place before it began…
    let low = initial.version;
    let lowOp: CompletedOperation | undefined;
    for (const op of ops) {
      if (op.kind === 'reject' || !(op.completedAt < reject.invokedAt)) continue;
      if (op.version > low || (op.version === low && lowOp === undefined)) {
        low = op.version;
        lowOp = op;
      }
    }
    if (low !== reject.expected) continue;
    // …and stays there if no write that could produce the next version started before it completed.
    const kept = new Set(ops.map((op) => op.id));
    const next = context
      .filter((op) => couldProduceNext(op, reject.expected, kept))
      .sort((a, b) => a.invokedAt - b.invokedAt || a.id - b.id)[0];
    if (next !== undefined && next.invokedAt <= reject.completedAt) continue;
    const before = lowOp === undefined ? 'the key was at its initial version' : describeOperation(lowOp);
    const after =
      next === undefined
        ? `no write in the history could have produced v${reject.expected + 1}`
        : `the first write that could have produced v${reject.expected + 1} started only after it completed (${describeOperation(next)})`;
    return (
      `${capitalize(describeOperation(reject))}, but the version was v${reject.expected} for its whole duration: ` +
      `before it began, ${before}; and ${after}.`
    );
  }
  return undefined;
}

/** What a pending operation needs from the version, as a clause. */
function need(op: CompletedOperation): string {
  switch (op.kind) {
    case 'ack':
      return `its write must come after v${op.version - 1}`;
    case 'observe':
      return `it saw v${op.version}`;
    case 'reject':
      return `its 412 means the version had moved past v${op.expected}`;
  }
}

/** Explains where the single-pass search got stuck. */
function explainStuck(stuck: StuckReason): string {
  switch (stuck.kind) {
    case 'observer-blocked':
      return (
        `${capitalize(describeOperation(stuck.observer))}, but it began after ${describeOperation(stuck.blocker)} ` +
        `had completed (t=${formatTime(stuck.blocker.completedAt)}), and ${need(stuck.blocker)}: the key had ` +
        `already moved past v${stuck.version} when the read began.`
      );
    case 'write-blocked':
      return (
        `${capitalize(describeOperation(stuck.blocker))}, which completed at t=${formatTime(stuck.blocker.completedAt)}; ` +
        `${need(stuck.blocker)}, so v${stuck.version + 1} must have existed by then, but the only write that produced ` +
        `it (${describeOperation(stuck.write)}) was invoked later.`
      );
    case 'no-write-for-observed':
      return (
        `${capitalize(describeOperation(stuck.observer))}, but no acknowledged write produced v${stuck.version + 1}, ` +
        `and every unknown-outcome write of ${JSON.stringify(stuck.observer.state)} that could have produced it ` +
        `in time is needed for another version or was invoked too late.`
      );
    case 'no-write-for-gap': {
      const waiting =
        stuck.waiting === undefined
          ? ''
          : `${capitalize(describeOperation(stuck.waiting))}, and ${need(stuck.waiting)}; but `;
      return (
        `${waiting}no acknowledged write produced v${stuck.version + 1}, and no unknown-outcome write was left ` +
        `(invoked in time and not needed for another version) that could have produced it.`
      );
    }
  }
}

/**
 * Explains why `ops` (a shrunk failing sub-history) is not linearizable.
 * `context` is all of the key's operations; `problem` and `stuck` are what
 * the checker reported for the sub-history, if anything.
 */
export function explainViolation(
  ops: readonly CompletedOperation[],
  context: readonly Operation[],
  initial: EntityValue,
  problem: StructuralProblem | undefined,
  stuck?: StuckReason,
): string {
  if (problem !== undefined) return explainProblem(problem, initial, context);
  // The pattern searches are quadratic; they are meant for shrunk sub-histories.
  if (ops.length <= 200) {
    const sorted = [...ops].sort((a, b) => a.invokedAt - b.invokedAt || a.id - b.id);
    const reason = explainOrder(sorted) ?? explainReject(sorted, context, initial);
    if (reason !== undefined) return reason;
  }
  if (stuck !== undefined) return explainStuck(stuck);
  return (
    `No order of these ${ops.length} operations agrees with both their real-time order and the register ` +
    `semantics (each successful write bumps the version by exactly one, a read returns the current value, a 412 ` +
    `means the version differed from the expected one).`
  );
}
