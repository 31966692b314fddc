/**
 * The errors concord raises to its users. Every error has a stable `code`
 * so that callers (and the HTTP layer) can branch on it without parsing
 * messages, and every error survives a hop over the peer transport.
 */

export type ConcordErrorCode =
  | 'UNAVAILABLE'
  | 'TIMEOUT'
  | 'STORE_UNAVAILABLE'
  | 'NAME_IN_USE'
  | 'CONFIG_MISMATCH'
  | 'UNKNOWN_ENTITY_KIND'
  | 'UNKNOWN_HANDLER'
  | 'HANDLER_ERROR'
  | 'BAD_MESSAGE'
  | 'STOPPED'
  | 'WRONG_EXPECTED_VERSION'
  | 'DOMAIN_ERROR'
  | 'IDEMPOTENCY_KEY_REUSED'
  | 'SECRET_MISMATCH'
  | 'WEAK_SECRET';

export class ConcordError extends Error {
  readonly code: ConcordErrorCode;
  /** Extra fields that travel with the error (for example a domain error's payload). */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ConcordErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

/**
 * The call was certainly not applied: no owner of the entity could be reached (or the owner
 * is known to be unreachable, or this node is not serving). Safe to retry, with or without an
 * idempotency key. `retryAfterMs` (in `details`, when known) is when the entity is expected to
 * be served again, e.g. once its shard has moved to a reachable node.
 */
export class Unavailable extends ConcordError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('UNAVAILABLE', message, { ...details, maybeApplied: false });
  }

  /** Milliseconds after which a retry is expected to succeed, when the node could tell. */
  get retryAfterMs(): number | undefined {
    const value = this.details?.['retryAfterMs'];
    return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
  }
}

/**
 * The outcome is unknown: the call reached an owner (or may have) but no answer arrived
 * before the deadline, or the connection dropped while it waited. A state-changing call may
 * or may not have been applied (exactly once if at all). Retry it only with the same
 * idempotency key, which makes the retry return the first answer instead of applying twice.
 */
export class Timeout extends ConcordError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('TIMEOUT', message, { ...details, maybeApplied: true });
  }
}

/**
 * The store could not be reached or failed. `maybeApplied` (in `details`) says whether a write
 * may have landed: true when a write's transaction failed without a known outcome (treat it
 * like Timeout), false when the call failed before anything was written (an activation, a read).
 */
export class StoreUnavailable extends ConcordError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('STORE_UNAVAILABLE', message, { maybeApplied: true, ...details });
  }
}

/** Another live process already holds this node name. */
export class NameInUse extends ConcordError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('NAME_IN_USE', message, details);
  }
}

/** The store was set up with settings that differ from this node's (for example the shard count). */
export class ConfigMismatch extends ConcordError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('CONFIG_MISMATCH', message, details);
  }
}

/** A handler threw: the entity's state is unchanged and the error is the handler's own. */
export class HandlerError extends ConcordError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('HANDLER_ERROR', message, details);
  }
}

/** The node (or the part of it asked) is stopped or stopping: the call was not applied. */
export class Stopped extends ConcordError {
  constructor(message = 'node is stopping') {
    super('STOPPED', message, { maybeApplied: false });
  }
}

/**
 * An idempotency key was used before, on the same entity, with a different request (another
 * handler or message). Nothing was applied. HTTP answers 422.
 */
export class IdempotencyKeyReused extends ConcordError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('IDEMPOTENCY_KEY_REUSED', message, details);
  }
}

/** This node's cluster secret does not match the verifier recorded in the store. */
export class SecretMismatch extends ConcordError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('SECRET_MISMATCH', message, details);
  }
}

/** The cluster secret is too short to be safe (fewer than 16 bytes). */
export class WeakSecret extends ConcordError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('WEAK_SECRET', message, details);
  }
}

/**
 * Whether a failed call may have been applied: false when it certainly was not (safe to
 * retry without an idempotency key), true when its outcome is unknown. Errors that are the
 * handler's or the application's own answer (a domain error, a bad message) were not applied
 * either. Errors that are not concord's are treated as unknown.
 */
export function maybeApplied(err: unknown): boolean {
  if (!(err instanceof ConcordError)) return true;
  switch (err.code) {
    case 'TIMEOUT':
      return true;
    case 'STORE_UNAVAILABLE':
      return err.details?.['maybeApplied'] !== false;
    default:
      return false;
  }
}

/**
 * An append to an event stream named a version the stream no longer (or not yet) has: someone
 * else appended first. Nothing was appended. Re-read the stream, decide again, retry.
 */
export class WrongExpectedVersion extends ConcordError {
  constructor(
    message: string,
    details: { stream: string; expectedVersion: number; actualVersion: number } | Record<string, unknown>,
  ) {
    super('WRONG_EXPECTED_VERSION', message, details);
  }

  /** The stream's version when the append was refused. */
  get actualVersion(): number {
    return Number(this.details?.['actualVersion']);
  }
}

/** The payload of a domain error: a code of the application's choosing plus any fields. */
export interface DomainErrorPayload {
  readonly code: string;
}

/**
 * An event-sourced command refused to act (`ctx.reject(payload)`): nothing was appended.
 * `error` is the command's payload, e.g. `{ code: 'ALREADY_ON_TEAM', teamId: 't1' }`; it
 * travels with the error across nodes (as `details`).
 */
export class DomainError<P extends DomainErrorPayload = DomainErrorPayload> extends ConcordError {
  constructor(payload: P, message = `command rejected: ${payload.code}`) {
    super('DOMAIN_ERROR', message, { ...payload } as Record<string, unknown>);
  }

  /** The payload the command rejected with. */
  get error(): P {
    return this.details as unknown as P;
  }

  /** The payload's code (e.g. 'ALREADY_ON_TEAM'). */
  get reason(): P['code'] {
    return this.error.code;
  }
}

/** Is `err` a DomainError (optionally with the payload code `reason`)? Works for errors from other nodes too. */
export function isDomainError<P extends DomainErrorPayload = DomainErrorPayload>(
  err: unknown,
  reason?: P['code'],
): err is DomainError<P> {
  return err instanceof DomainError && (reason === undefined || err.reason === reason);
}

/** Plain-data form of an error, for the wire. */
export interface ErrorShape {
  code: string;
  name: string;
  message: string;
  details?: Record<string, unknown> | undefined;
}

export function errorToShape(err: unknown): ErrorShape {
  if (err instanceof ConcordError) {
    return { code: err.code, name: err.name, message: err.message, details: err.details };
  }
  if (err instanceof Error) return { code: 'HANDLER_ERROR', name: err.name, message: err.message };
  return { code: 'HANDLER_ERROR', name: 'Error', message: String(err) };
}

export function errorFromShape(shape: ErrorShape): ConcordError {
  switch (shape.code) {
    case 'UNAVAILABLE':
      return new Unavailable(shape.message, shape.details);
    case 'TIMEOUT':
      return new Timeout(shape.message, shape.details);
    case 'STORE_UNAVAILABLE':
      return new StoreUnavailable(shape.message, shape.details);
    case 'STOPPED':
      return new Stopped(shape.message);
    case 'IDEMPOTENCY_KEY_REUSED':
      return new IdempotencyKeyReused(shape.message, shape.details);
    case 'WRONG_EXPECTED_VERSION':
      return new WrongExpectedVersion(shape.message, shape.details ?? {});
    case 'DOMAIN_ERROR':
      if (typeof shape.details?.['code'] === 'string') {
        return new DomainError(shape.details as unknown as DomainErrorPayload, shape.message);
      }
      return new ConcordError('DOMAIN_ERROR', shape.message, shape.details);
    default: {
      const err = new ConcordError(shape.code as ConcordErrorCode, shape.message, shape.details);
      err.name = shape.name;
      return err;
    }
  }
}
