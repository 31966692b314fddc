/**
 * events — the event store and event-sourced entities.
 *
 * - `EventStore`: streams of events, unique on (stream, version) in the database itself;
 *   `append(stream, events, expectedVersion)` fails with WrongExpectedVersion when someone
 *   appended first; `read`, `version`, and `readLog` (the store-wide log, for projections).
 * - `defineEventSourcedEntity`: an entity whose commands decide events; its owner appends
 *   them with the fenced write of each batch, so they follow exactly the version it decided on.
 * - `Projection`: an eventually consistent in-memory view fed by the log.
 */
export {
  type Command,
  type CommandContext,
  type CommandReply,
  type Decision,
  type DomainErrorOf,
  type DomainEvent,
  defineEventSourcedEntity,
  type EventOf,
  type EventSourcedDefinition,
  type EventSourcedHandlers,
  type EventSourcedOptions,
  type Query,
  type QueryContext,
  Rejection,
} from './entity.js';
export {
  type EventInput,
  type EventLogRead,
  EventStore,
  type EventStoreOptions,
  type RecordedEvent,
  streamName,
} from './event-store.js';
export { Projection, type ProjectionOptions } from './projection.js';
