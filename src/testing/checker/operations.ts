/**
 * The checker's internal view of one key's operations.
 *
 * Each history entry becomes at most one operation of one of five kinds, which
 * is all the register model needs to know:
 *
 * | kind         | from                              | constraint at its linearization point            |
 * |--------------|-----------------------------------|--------------------------------------------------|
 * | `observe`    | ok read; 412 cas that reported    | value is exactly (state, version)                |
 * |              | the current value                 | (and version ≠ expected for the 412)             |
 * | `reject`     | 412 cas without a value           | version ≠ expected                               |
 * | `ack`        | ok write / ok cas                 | version was `version - 1` (and `expected` for a  |
 * |              |                                   | cas); afterwards (state, version)                |
 * | `maybeWrite` | info write                        | optional; bumps the version, sets the state      |
 * | `maybeCas`   | info cas                          | optional; only when version = expected           |
 *
 * Reads with an unknown or failed outcome and failed (non-412) writes carry no
 * information and are dropped.
 */

import type { HistoryEntry } from './history.js';

export type OperationKind = 'observe' | 'reject' | 'ack' | 'maybeWrite' | 'maybeCas';

interface OperationBase {
  /** Dense index within one check (used as the bit index of the search). */
  readonly id: number;
  /** Index of the source entry in the full history. */
  readonly index: number;
  readonly entry: HistoryEntry;
  readonly invokedAt: number;
  /** +Infinity for operations with an unknown outcome. */
  readonly completedAt: number;
}

export interface ObserveOperation extends OperationBase {
  readonly kind: 'observe';
  readonly state: string;
  readonly version: number;
  /** Set for a 412 cas that reported the current value. */
  readonly expected: number | undefined;
}

export interface RejectOperation extends OperationBase {
  readonly kind: 'reject';
  readonly expected: number;
}

export interface AckOperation extends OperationBase {
  readonly kind: 'ack';
  /** The state the write asked for. */
  readonly written: string;
  /** The value the acknowledgement reported. */
  readonly state: string;
  readonly version: number;
  /** Set for a cas. */
  readonly expected: number | undefined;
}

export interface MaybeWriteOperation extends OperationBase {
  readonly kind: 'maybeWrite';
  readonly written: string;
}

export interface MaybeCasOperation extends OperationBase {
  readonly kind: 'maybeCas';
  readonly written: string;
  readonly expected: number;
}

export type Operation = ObserveOperation | RejectOperation | AckOperation | MaybeWriteOperation | MaybeCasOperation;

export type CompletedOperation = ObserveOperation | RejectOperation | AckOperation;
export type MaybeOperation = MaybeWriteOperation | MaybeCasOperation;

export function isCompleted(operation: Operation): operation is CompletedOperation {
  return operation.kind === 'observe' || operation.kind === 'reject' || operation.kind === 'ack';
}

export interface SourceEntry {
  readonly index: number;
  readonly entry: HistoryEntry;
}

type Shape =
  | Omit<ObserveOperation, keyof OperationBase>
  | Omit<RejectOperation, keyof OperationBase>
  | Omit<AckOperation, keyof OperationBase>
  | Omit<MaybeWriteOperation, keyof OperationBase>
  | Omit<MaybeCasOperation, keyof OperationBase>;

/** The operation an entry contributes, or undefined when it carries no information. */
function shapeOf(entry: HistoryEntry): Shape | undefined {
  const { op, outcome, result } = entry;
  if (op === 'read') {
    if (outcome !== 'ok' || result === undefined) return undefined;
    return { kind: 'observe', state: result.state, version: result.version, expected: undefined };
  }
  const written = entry.value ?? '';
  if (op === 'write') {
    if (outcome === 'fail') return undefined;
    if (outcome === 'info') return { kind: 'maybeWrite', written };
    if (result === undefined) return undefined;
    return { kind: 'ack', written, state: result.state, version: result.version, expected: undefined };
  }
  const expected = entry.expectedVersion ?? 0;
  if (outcome === 'info') return { kind: 'maybeCas', written, expected };
  if (outcome === 'fail') {
    if (result === undefined) return { kind: 'reject', expected };
    return { kind: 'observe', state: result.state, version: result.version, expected };
  }
  if (result === undefined) return undefined;
  return { kind: 'ack', written, state: result.state, version: result.version, expected };
}

function build(source: SourceEntry, shape: Shape, id: number): Operation {
  const completedAt =
    shape.kind === 'maybeWrite' || shape.kind === 'maybeCas'
      ? Number.POSITIVE_INFINITY
      : (source.entry.completedAt ?? Number.POSITIVE_INFINITY);
  const draft = {
    ...shape,
    id,
    index: source.index,
    entry: source.entry,
    invokedAt: source.entry.invokedAt,
    completedAt,
  };
  // Rebuilt with a fixed property order so that all operations share a few object shapes.
  return withId(draft, id);
}

/** Converts a key's entries (assumed valid) into operations, ids 0..n-1 in input order. */
export function toOperations(sources: readonly SourceEntry[]): Operation[] {
  const operations: Operation[] = [];
  for (const source of sources) {
    const shape = shapeOf(source.entry);
    if (shape !== undefined) operations.push(build(source, shape, operations.length));
  }
  return operations;
}

/**
 * The operations with everything outside `keep` weakened to what is certainly
 * still true of it: observations (reads, 412s) are dropped and acknowledged
 * writes become "may or may not have happened". Weakening only adds possible
 * linearizations, so if the weakened history is not linearizable neither is
 * the original: that is what makes a shrunk history a genuine witness.
 */
export function weaken(operations: readonly Operation[], keep: ReadonlySet<number>): Operation[] {
  const result: Operation[] = [];
  for (const operation of operations) {
    const id = result.length;
    if (keep.has(operation.id) || operation.kind === 'maybeWrite' || operation.kind === 'maybeCas') {
      result.push(withId(operation, id));
    } else if (operation.kind === 'ack') {
      const { index, entry, invokedAt, written, expected } = operation;
      const completedAt = Number.POSITIVE_INFINITY;
      // Explicit literals (not spreads): this runs once per shrinking step over the whole key.
      result.push(
        expected === undefined
          ? { kind: 'maybeWrite', id, index, entry, invokedAt, completedAt, written }
          : { kind: 'maybeCas', id, index, entry, invokedAt, completedAt, written, expected },
      );
    }
  }
  return result;
}

function withId(operation: Operation, id: number): Operation {
  const { index, entry, invokedAt, completedAt } = operation;
  switch (operation.kind) {
    case 'observe': {
      const { state, version, expected } = operation;
      return { kind: 'observe', id, index, entry, invokedAt, completedAt, state, version, expected };
    }
    case 'reject':
      return { kind: 'reject', id, index, entry, invokedAt, completedAt, expected: operation.expected };
    case 'ack': {
      const { written, state, version, expected } = operation;
      return { kind: 'ack', id, index, entry, invokedAt, completedAt, written, state, version, expected };
    }
    case 'maybeWrite':
      return { kind: 'maybeWrite', id, index, entry, invokedAt, completedAt, written: operation.written };
    case 'maybeCas': {
      const { written, expected } = operation;
      return { kind: 'maybeCas', id, index, entry, invokedAt, completedAt, written, expected };
    }
  }
}
