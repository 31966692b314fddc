/**
 * Entity definitions: a kind name, an initial state and turn-based handlers.
 *
 * ```ts
 * const Counter = defineEntity('counter', {
 *   initial: () => ({ n: 0 }),
 *   handlers: {
 *     get: (state) => state.n,
 *     add: (state, by: number, ctx) => { ctx.setState({ n: state.n + by }); return state.n + by; },
 *   },
 * });
 * ```
 *
 * A handler that calls `ctx.setState` changes the entity; its reply is released only
 * after the new state is durable in the store. A handler that does not is a read and
 * is answered from memory. State must be JSON-serialisable; messages and replies that
 * cross nodes must be MessagePack-serialisable. Calls on the owning node pass messages
 * and replies by reference: treat them, and the state you are given, as immutable.
 */
import type { EntityPersistence } from './persistence.js';

export interface TurnContext<S> {
  readonly kind: string;
  readonly id: string;
  /** The entity's version: acknowledged changes so far, including this turn's once it calls setState. */
  readonly version: number;
  /** Replace the state. The turn's reply waits until the new state is durable. */
  setState(next: S): void;
}

/** A handler: `(state, message, ctx) => reply`. Declare the message's type on the parameter. */
export type Handler<S> = (state: S, message: never, ctx: TurnContext<S>) => unknown;

export type Handlers<S> = Record<string, Handler<S>>;

export interface EntityOptions<S, H extends Handlers<S>> {
  /** The state of an entity that has never been written. */
  initial: (id: string) => S;
  handlers: H;
  /**
   * Which handlers outside clients may call over HTTP (`POST /entity-calls/:kind/:id/:method`,
   * what `concord-cluster/client` uses): `true` for every handler, or a list of handler names.
   * Default: none — a kind is internal unless its definition (or the node's options) says so.
   * Exposing a handler lets anyone who can reach a node's HTTP port call it with any message:
   * see SECURITY.md.
   */
  exposed?: boolean | readonly (keyof H & string)[];
}

export interface EntityDefinition<S = unknown, H extends Handlers<S> = Handlers<S>> {
  readonly kind: string;
  readonly initial: (id: string) => S;
  readonly handlers: H;
  /** Handlers outside clients may call over HTTP (see EntityOptions.exposed); empty: none. */
  readonly exposed?: readonly string[];
  /** Internal: how the row is kept, for kinds that differ from "row = JSON of the state" (event sourcing). */
  readonly persistence?: EntityPersistence;
}

/** Any entity definition, whatever its state and handler types (for lists of kinds). */
export interface AnyEntityDefinition {
  readonly kind: string;
  readonly initial: (id: string) => unknown;
  readonly handlers: Readonly<Record<string, (...args: never[]) => unknown>>;
  readonly exposed?: readonly string[];
}

/** The message type of handler H (undefined when the handler takes none). */
export type MessageOf<F> = F extends (state: never, message: infer M, ...rest: never[]) => unknown
  ? unknown extends M
    ? undefined
    : M
  : never;

/** The reply type of handler F, unwrapped from a promise. */
export type ReplyOf<F> = F extends (...args: never[]) => infer R ? Awaited<R> : never;

/** A typed handle on one entity: one method per handler. */
export type EntityRef<H> = {
  readonly [K in keyof H]: undefined extends MessageOf<H[K]>
    ? (message?: MessageOf<H[K]>, options?: CallOptions) => Promise<ReplyOf<H[K]>>
    : (message: MessageOf<H[K]>, options?: CallOptions) => Promise<ReplyOf<H[K]>>;
};

export interface CallOptions {
  /** How long the call may take, including retries while ownership moves. */
  timeoutMs?: number;
  /**
   * Makes retrying a state-changing call safe: a call that changed the entity is remembered
   * with its key and its reply, in the same fenced write as the change, so a retry with the
   * same key (after `Unavailable`, a timeout, a failover) returns the first reply instead of
   * applying the change again. The same key with another handler or message fails with
   * IdempotencyKeyReused. Keys are per entity, and kept at least NodeOptions.idempotencyWindowMs
   * (default 24 h). A keyed call that changes nothing (a read, a refusal, a failure) stores no
   * key: it applied nothing, so a retry simply runs it again. The message must be the same on
   * every retry, and the reply of a keyed change must be JSON-serialisable (a replay answers
   * its JSON form).
   */
  idempotencyKey?: string;
}

const KIND_PATTERN = /^[A-Za-z0-9_.:-]{1,64}$/;

export function defineEntity<S, H extends Handlers<S>>(
  kind: string,
  options: EntityOptions<S, H>,
): EntityDefinition<S, H> {
  if (!KIND_PATTERN.test(kind)) {
    throw new TypeError(`entity kind "${kind}" must be 1-64 characters of letters, digits, _ . : -`);
  }
  for (const [name, handler] of Object.entries(options.handlers)) {
    if (typeof handler !== 'function') throw new TypeError(`handler ${kind}.${name} is not a function`);
  }
  const exposed = exposedHandlers(kind, options.handlers, options.exposed);
  return Object.freeze({ kind, initial: options.initial, handlers: options.handlers, exposed });
}

function exposedHandlers(
  kind: string,
  handlers: Handlers<never>,
  exposed: boolean | readonly string[] | undefined,
): readonly string[] {
  if (exposed === undefined || exposed === false) return Object.freeze([]);
  if (exposed === true) return Object.freeze(Object.keys(handlers));
  for (const name of exposed) {
    if (!Object.hasOwn(handlers, name)) throw new TypeError(`exposed handler ${kind}.${name} does not exist`);
  }
  return Object.freeze([...exposed]);
}

/** Calls a handler by kind name; every node flavour (ConcordNode, the baselines) has one. */
export type CallByName = (
  kind: string,
  id: string,
  handler: string,
  message: unknown,
  options?: CallOptions,
) => Promise<unknown>;

/** A typed handle on one entity (`node.ref(Counter, 'c1').add(2)`), over any node's callByName. */
export function entityRef<S, H extends Handlers<S>>(
  definition: EntityDefinition<S, H>,
  id: string,
  callByName: CallByName,
): EntityRef<H> {
  const ref: Record<string, (message?: unknown, options?: CallOptions) => Promise<unknown>> = {};
  for (const handler of Object.keys(definition.handlers)) {
    ref[handler] = (message?: unknown, options?: CallOptions) =>
      callByName(definition.kind, id, handler, message, options);
  }
  return ref as EntityRef<H>;
}

/**
 * A turn context for hosts that keep a plain state and version (the `--ownership none` and
 * store-on-every-call baselines): `changed()` and `next()` tell afterwards whether and how
 * the handler changed the state. (The entity host builds its own, with group commit.)
 */
export function plainTurnContext(
  kind: string,
  id: string,
  version: number,
): { ctx: TurnContext<unknown>; changed: () => boolean; next: () => unknown } {
  let changed = false;
  let next: unknown;
  const ctx: TurnContext<unknown> = {
    kind,
    id,
    get version() {
      return version + (changed ? 1 : 0);
    },
    setState(value: unknown) {
      next = value;
      changed = true;
    },
  };
  return { ctx, changed: () => changed, next: () => next };
}
