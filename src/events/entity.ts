import type { EntityDefinition, MessageOf, TurnContext } from '../entity/define.js';
import type { AppendingTurnContext, EntityPersistence } from '../entity/persistence.js';
import { DomainError, type DomainErrorPayload } from '../errors.js';
import type { NewEvent } from '../store/types.js';
import { encodeEvent, streamName } from './event-store.js';

/**
 * Event-sourced entities: commands decide events from the current state, events are folded
 * into the state and appended to the entity's stream (`kind/id`).
 *
 * ```ts
 * type UserEvent = { type: 'TeamJoined'; data: { teamId: string } } | { type: 'TeamLeft'; data: { teamId: string } };
 * const User = defineEventSourcedEntity('user', {
 *   initial: () => ({ teamId: null as string | null }),
 *   apply: (state, event: UserEvent) => ({ teamId: event.type === 'TeamJoined' ? event.data.teamId : null }),
 *   commands: {
 *     join: (state, teamId: string, ctx) =>
 *       state.teamId === teamId ? []
 *       : state.teamId !== null ? ctx.reject({ code: 'ALREADY_ON_TEAM', teamId: state.teamId })
 *       : [{ type: 'TeamJoined', data: { teamId } }],
 *   },
 *   queries: { team: (state) => state.teamId },
 * });
 * const reply = await node.ref(User, 'sue').join('red'); // { state, version, events }
 * ```
 *
 * Such an entity is an ordinary entity to the runtime (one owner, calls routed, turns one at
 * a time, `node.call`/`ref`/`callByName`), with these differences:
 * - the owner's write of a batch inserts the batch's events at the stream's next versions in
 *   the same transaction as its fenced row update; the unique key on (stream, version)
 *   refuses them if anyone else appended first, and the command is then decided again on
 *   the fresh stream;
 * - the row holds a snapshot (state and the version it covers), rewritten every
 *   `snapshotEvery` events; activation = snapshot + the events after it;
 * - `ctx.version` and replies count events: the version is the stream's.
 * A command that returns no events is a read. `ctx.reject(payload)` refuses: the caller's
 * promise rejects with a DomainError carrying the payload, and nothing is appended.
 */

/** An event as commands return it and `apply` folds it. Data must be JSON-serialisable. */
export interface DomainEvent<T extends string = string, D = unknown> {
  readonly type: T;
  readonly data: D;
}

/** A command's refusal, made by `ctx.reject(payload)`. */
export class Rejection<P extends DomainErrorPayload = DomainErrorPayload> {
  /** Brand: only ctx.reject makes rejections (public so the structural type differs from a plain object). */
  readonly rejected = true as const;

  constructor(readonly error: P) {}
}

/** What a command returns: the events to append (none: nothing changes), or a rejection. */
export type Decision<E, P extends DomainErrorPayload = DomainErrorPayload> = readonly E[] | Rejection<P>;

export interface CommandContext {
  readonly kind: string;
  readonly id: string;
  /** The stream version the command decides on. */
  readonly version: number;
  /** Refuse the command with a domain error: `return ctx.reject({ code: 'ALREADY_ON_TEAM', teamId })`. */
  reject<const P extends DomainErrorPayload>(error: P): Rejection<P>;
}

export interface QueryContext {
  readonly kind: string;
  readonly id: string;
  /** The stream version the state reflects. */
  readonly version: number;
}

/** A command: `(state, message, ctx) => events | ctx.reject(…)`, possibly async. Declare the message's type on the parameter. */
export type Command<S, E> = (state: S, message: never, ctx: CommandContext) => Decision<E> | PromiseLike<Decision<E>>;

/** A read-only handler: `(state, message, ctx) => reply`. */
export type Query<S> = (state: S, message: never, ctx: QueryContext) => unknown;

export interface EventSourcedOptions<S, E extends DomainEvent, C, Q> {
  /** The state before the first event. */
  initial: (id: string) => S;
  /** Fold one event into the state. Must be pure and deterministic: it runs again on every activation. */
  apply: (state: S, event: E) => S;
  commands: C;
  queries?: Q;
  /**
   * Rewrite the snapshot in the entity's row once this many events have been appended since
   * the last one (1: with every write). Activation reads at most this many events after the
   * snapshot. Default 100.
   */
  snapshotEvery?: number;
}

/** The reply of a command: the state after it, the stream version, and the events it appended. */
export interface CommandReply<S, E> {
  state: S;
  version: number;
  events: E[];
}

/** The handlers the runtime sees: commands and queries, with their message and reply types. */
export type EventSourcedHandlers<S, E, C, Q> = {
  readonly [K in keyof C]: (state: S, message: MessageOf<C[K]>, ctx: TurnContext<S>) => Promise<CommandReply<S, E>>;
} & (string extends keyof Q // no `queries` given: Q is inferred as its constraint
  ? unknown
  : {
      readonly [K in keyof Q]: (
        state: S,
        message: MessageOf<Q[K]>,
        ctx: TurnContext<S>,
      ) => Promise<Awaited<ReturnOf<Q[K]>>>;
    });

type ReturnOf<F> = F extends (...args: never[]) => infer R ? R : never;

export interface EventSourcedDefinition<S, E extends DomainEvent, C, Q>
  extends EntityDefinition<S, EventSourcedHandlers<S, E, C, Q>> {
  readonly apply: (state: S, event: E) => S;
  readonly snapshotEvery: number;
  /** The stream of entity `id`: `kind/id`. */
  stream(id: string): string;
}

/** The payload type of the domain errors command K of definition D can reject with. */
export type DomainErrorOf<D, K extends string> =
  D extends EventSourcedDefinition<infer _S, infer _E, infer C, infer _Q>
    ? K extends keyof C
      ? Awaited<ReturnOf<C[K]>> extends infer R
        ? R extends Rejection<infer P>
          ? P
          : never
        : never
      : never
    : never;

/** The event type of an event-sourced definition. */
export type EventOf<D> = D extends EventSourcedDefinition<infer _S, infer E, infer _C, infer _Q> ? E : never;

const KIND_PATTERN = /^[A-Za-z0-9_.:-]{1,64}$/;
const DEFAULT_SNAPSHOT_EVERY = 100;
const READ_PAGE = 1000;

interface Snapshot {
  /** The version the state covers. */
  v: number;
  /** The state. */
  s: unknown;
}

export function defineEventSourcedEntity<
  S,
  E extends DomainEvent,
  C extends Record<string, Command<S, E>>,
  Q extends Record<string, Query<S>>,
>(kind: string, options: EventSourcedOptions<S, E, C, Q>): EventSourcedDefinition<S, E, C, Q> {
  if (!KIND_PATTERN.test(kind)) {
    throw new TypeError(`entity kind "${kind}" must be 1-64 characters of letters, digits, _ . : -`);
  }
  const snapshotEvery = options.snapshotEvery ?? DEFAULT_SNAPSHOT_EVERY;
  if (!Number.isSafeInteger(snapshotEvery) || snapshotEvery < 1) {
    throw new RangeError(`snapshotEvery must be a positive integer, got ${snapshotEvery}`);
  }
  const { initial, apply } = options;
  const handlers: Record<string, (state: S, message: never, ctx: TurnContext<S>) => unknown> = {};
  for (const [name, command] of Object.entries(options.commands)) {
    if (typeof command !== 'function') throw new TypeError(`command ${kind}.${name} is not a function`);
    handlers[name] = commandHandler(kind, name, command, apply);
  }
  for (const [name, query] of Object.entries(options.queries ?? {})) {
    if (typeof query !== 'function') throw new TypeError(`query ${kind}.${name} is not a function`);
    if (Object.hasOwn(handlers, name)) throw new TypeError(`${kind}.${name} is both a command and a query`);
    // Queries get a context without setState: they can never change the state behind the stream's back.
    handlers[name] = (state, message, ctx) =>
      query(state, message, { kind: ctx.kind, id: ctx.id, version: ctx.version });
  }

  const stream = (id: string) => streamName(kind, id);
  const persistence: EntityPersistence = {
    initialRow: (id) => JSON.stringify({ v: 0, s: initial(id) } satisfies Snapshot),
    stream,
    snapshot: (state, version, snapshotVersion) =>
      version - snapshotVersion >= snapshotEvery ? JSON.stringify({ v: version, s: state } satisfies Snapshot) : null,
    async load(id, row, store) {
      const name = stream(id);
      const snapshot = parseSnapshot(name, row.state);
      let state = snapshot.s as S;
      let version = snapshot.v;
      for (;;) {
        const page = await store.readEvents(name, version + 1, READ_PAGE);
        for (const event of page) {
          if (event.version !== version + 1) throw new Error(`stream ${name} has no event ${version + 1}`);
          state = apply(state, { type: event.type, data: JSON.parse(event.data) } as E);
          version = event.version;
        }
        if (page.length < READ_PAGE) break;
      }
      // The row's version counts events its owners appended: the stream has at least those.
      if (version < row.version)
        throw new Error(`stream ${name} ends at ${version}, its entity row is at ${row.version}`);
      return { state, version, snapshotVersion: snapshot.v };
    },
  };

  return Object.freeze({
    kind,
    initial,
    apply,
    snapshotEvery,
    stream,
    handlers: Object.freeze(handlers) as unknown as EventSourcedHandlers<S, E, C, Q>,
    persistence,
  });
}

function commandHandler<S, E extends DomainEvent>(
  kind: string,
  name: string,
  command: Command<S, E>,
  apply: (state: S, event: E) => S,
) {
  return (state: S, message: never, ctx: TurnContext<S>): CommandReply<S, E> | Promise<CommandReply<S, E>> => {
    const decision = command(state, message, {
      kind: ctx.kind,
      id: ctx.id,
      version: ctx.version,
      reject: (error) => new Rejection(error),
    });
    const settle = (d: Decision<E>) => decide(kind, name, state, d, apply, ctx as AppendingTurnContext<S>);
    return isThenable(decision) ? Promise.resolve(decision).then(settle) : settle(decision);
  };
}

/** Fold the decided events into the state and hand them to the host, which appends them with the batch's write. */
function decide<S, E extends DomainEvent>(
  kind: string,
  name: string,
  state: S,
  decision: Decision<E>,
  apply: (state: S, event: E) => S,
  ctx: AppendingTurnContext<S>,
): CommandReply<S, E> {
  if (!Array.isArray(decision)) {
    if (decision instanceof Rejection) throw new DomainError(decision.error);
    throw new TypeError(`command ${kind}.${name} must return an array of events or ctx.reject(…)`);
  }
  if (decision.length === 0) return { state, version: ctx.version, events: [] };
  const stored: NewEvent[] = [];
  const folded: E[] = [];
  let next = state;
  for (const event of decision as readonly E[]) {
    const encoded = encodeEvent(event);
    // Fold exactly what a later activation will read back from the store.
    const copy = { type: encoded.type, data: JSON.parse(encoded.data) } as E;
    next = apply(next, copy);
    stored.push(encoded);
    folded.push(copy);
  }
  if (typeof ctx.append === 'function') ctx.append(next, stored);
  // A host without event support (the in-memory baseline of `--ownership none`) keeps the state only.
  else ctx.setState(next);
  return { state: next, version: ctx.version, events: folded };
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function';
}

function parseSnapshot(stream: string, text: string): Snapshot {
  const parsed = JSON.parse(text) as unknown;
  if (typeof parsed === 'object' && parsed !== null && 'v' in parsed && 's' in parsed) {
    const { v, s } = parsed as Snapshot;
    if (Number.isSafeInteger(v) && v >= 0) return { v, s };
  }
  throw new Error(`the entity row of ${stream} holds no event-sourced snapshot`);
}
