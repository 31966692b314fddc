import { WrongExpectedVersion } from '../errors.js';
import type { LogCursor, NewEvent, Store, StoredEvent } from '../store/types.js';

/** An event to append: a type name and JSON-serialisable data. */
export interface EventInput<T extends string = string, D = unknown> {
  readonly type: T;
  readonly data: D;
}

/** An event as recorded in a stream. */
export interface RecordedEvent<T extends string = string, D = unknown> {
  readonly stream: string;
  /** 1 for the stream's first event, then consecutive. */
  readonly version: number;
  readonly type: T;
  readonly data: D;
  /** The node (or outside writer) that appended it. */
  readonly node: string;
  /** When it was appended, in ms on the store's clock. */
  readonly at: number;
}

export interface EventLogRead {
  events: RecordedEvent[];
  /** Where the next read continues; unchanged when there was nothing new. */
  cursor: LogCursor;
}

export interface EventStoreOptions {
  /** Recorded as the appending node of every event appended through this instance. Default 'outside'. */
  node?: string;
}

const PAGE = 1000;

/** The stream of entity (kind, id): `kind/id` (entity kinds cannot contain '/'). */
export function streamName(kind: string, id: string): string {
  return `${kind}/${id}`;
}

/**
 * The event store: streams of events, each event at the next version of its stream, unique
 * on (stream, version) in the database itself. Event-sourced entities append through their
 * owner (see defineEventSourcedEntity); anyone else may append with `append`, which succeeds
 * only if the stream is still at the version the writer saw, so a decision made on a stale
 * read can never be recorded.
 */
export class EventStore {
  private readonly node: string;

  constructor(
    private readonly store: Store,
    options: EventStoreOptions = {},
  ) {
    this.node = options.node ?? 'outside';
  }

  /**
   * Append `events` to `stream` if its version is still `expectedVersion` (0 for a stream
   * without events); all of them or none. Resolves with the stream's new version. Rejects
   * with WrongExpectedVersion when the stream is at another version: nothing was appended.
   */
  async append(stream: string, events: readonly EventInput[], expectedVersion: number): Promise<{ version: number }> {
    checkStream(stream);
    if (!Number.isSafeInteger(expectedVersion) || expectedVersion < 0) {
      throw new RangeError(`expectedVersion must be a non-negative integer, got ${expectedVersion}`);
    }
    const result = await this.store.appendEvents({
      stream,
      expectedVersion,
      events: events.map(encodeEvent),
      node: this.node,
    });
    if (!result.ok) {
      throw new WrongExpectedVersion(
        `stream ${stream} is at version ${result.actualVersion}, not the expected ${expectedVersion}`,
        { stream, expectedVersion, actualVersion: result.actualVersion },
      );
    }
    return { version: result.version };
  }

  /** The events of `stream` from `fromVersion` (default 1) on, in order; at most `limit` if given. */
  async read(stream: string, fromVersion = 1, limit = Number.POSITIVE_INFINITY): Promise<RecordedEvent[]> {
    checkStream(stream);
    const events: RecordedEvent[] = [];
    let from = Math.max(1, fromVersion);
    while (events.length < limit) {
      const page = await this.store.readEvents(stream, from, Math.min(PAGE, limit - events.length));
      for (const event of page) events.push(decodeEvent(event));
      if (page.length < PAGE) break;
      from = page.at(-1)!.version + 1;
    }
    return events;
  }

  /** The stream's version: its last event's, 0 when it has none. */
  version(stream: string): Promise<number> {
    checkStream(stream);
    return this.store.streamVersion(stream);
  }

  /**
   * The next events of the store-wide log after `cursor` (null: from the beginning), for
   * projections. Following the returned cursors visits every committed event exactly once,
   * each stream in version order; events of different streams may interleave differently
   * from their commit times.
   */
  async readLog(
    cursor: LogCursor | null,
    options: { limit?: number; streamPrefix?: string } = {},
  ): Promise<EventLogRead> {
    const page = await this.store.readEventLog(cursor, options.limit ?? PAGE, options.streamPrefix);
    return { events: page.events.map(decodeEvent), cursor: page.cursor };
  }
}

function checkStream(stream: string): void {
  if (typeof stream !== 'string' || stream.length === 0 || stream.length > 512) {
    throw new TypeError('a stream name must be a string of 1-512 characters');
  }
}

/** Validate and serialise an event for the store. */
export function encodeEvent(event: EventInput): NewEvent {
  if (typeof event !== 'object' || event === null || typeof event.type !== 'string' || event.type.length === 0) {
    throw new TypeError('an event must be an object with a non-empty string `type`');
  }
  const data = JSON.stringify(event.data ?? null);
  if (data === undefined) throw new TypeError(`the data of event ${event.type} is not JSON-serialisable`);
  return { type: event.type, data };
}

export function decodeEvent(event: StoredEvent): RecordedEvent {
  return {
    stream: event.stream,
    version: event.version,
    type: event.type,
    data: JSON.parse(event.data) as unknown,
    node: event.node,
    at: event.at,
  };
}
