import type { NewEvent, Store } from '../store/types.js';
import type { TurnContext } from './define.js';

/**
 * Internal hooks for entity kinds whose row is not simply "the JSON of the state": the
 * event-sourced entities of src/events keep a snapshot in the row and their history in an
 * event stream, and every write appends to that stream.
 *
 * The host stays in charge of everything the safety argument depends on: the fenced claim
 * of the row before anything is loaded, one batch at a time, one write per batch under
 * `WHERE epoch = e AND version = v`, and no reply before that write has committed. The hooks
 * only decide what the row's text is, how the live state is rebuilt after the claim, and
 * which stream the events go to. A definition without hooks behaves exactly as before.
 */
export interface EntityPersistence {
  /** The row's state text for an entity that has no row yet (inserted at version 0). */
  initialRow(id: string): string;
  /**
   * Build the live state from the row that activation has just claimed. Every older owner is
   * fenced out by then (their writes need the old epoch), so whatever this reads from the
   * store is at least as new as anything they committed.
   */
  load(id: string, row: { state: string; version: number }, store: Store): Promise<LoadedState>;
  /** The stream this entity's events are appended to. */
  stream(id: string): string;
  /**
   * The row's state text for a write that brings the entity to `version`, or null to keep the
   * row's current snapshot (which covers `snapshotVersion`).
   */
  snapshot(state: unknown, version: number, snapshotVersion: number): string | null;
}

export interface LoadedState {
  state: unknown;
  /** The entity's version; for an event-sourced entity, its stream's. */
  version: number;
  /** The version the row's snapshot covers. */
  snapshotVersion: number;
}

/** The turn context the host gives the handlers of a kind with persistence hooks. */
export interface AppendingTurnContext<S> extends TurnContext<S> {
  /**
   * This turn appends `events` (non-empty) and its state becomes `next` (the events folded
   * in). The version advances by one per event.
   */
  append(next: S, events: readonly NewEvent[]): void;
}
