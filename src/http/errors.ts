import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ConcordError, maybeApplied } from '../errors.js';
import type { Logger } from '../logger.js';
import { ID_RULE } from './schemas.js';

/**
 * How errors become HTTP answers: always JSON `{"error": "...", …}`, never a stack trace.
 *
 * - a call that was certainly not applied (`Unavailable`, `Stopped`, a `StoreUnavailable` before
 *   anything was written) → 503 `{"error","code":"UNAVAILABLE","maybeApplied":false}` +
 *   `Retry-After` (whole seconds: when the entity is expected to be served again, at least 1);
 *   safe to retry, on this node or another;
 * - a call whose outcome is unknown (`Timeout`, a write whose transaction failed) → 504
 *   `{"error","code":"TIMEOUT","maybeApplied":true}`: retry only with the same
 *   `Idempotency-Key`, which replays the first answer instead of applying twice;
 * - an idempotency key reused with a different request → 422;
 * - bad input (schema validation, invalid JSON, `BAD_MESSAGE`) → 400; body too large → 413;
 * - an unknown entity kind → 404; a command's typed refusal (`DOMAIN_ERROR`) → 409;
 * - unknown route → 404, known route with another method → 405 + `Allow`;
 * - anything else → 500 `internal server error` (the only case whose stack is logged).
 *
 * Client errors are logged at debug, unavailability at info, server errors at error.
 */

export interface ErrorAnswer {
  status: number;
  body: { error: string; [field: string]: unknown };
  retryAfterSeconds?: number;
}

/** Codes of errors that say the call did not get through (as opposed to the handler's own answer). */
const AVAILABILITY_CODES = new Set(['UNAVAILABLE', 'TIMEOUT', 'STORE_UNAVAILABLE', 'STOPPED']);

/** Friendlier words for Fastify's own client errors. */
const FASTIFY_MESSAGES: Record<string, string> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'the body is not valid JSON',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'the body is empty; send a JSON object',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported content type; send application/json',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'the Content-Length header does not match the body',
  FST_ERR_BAD_URL: 'the URL is malformed',
};

export function errorAnswer(error: unknown, bodyLimit: number): ErrorAnswer {
  if (error instanceof ConcordError) {
    if (AVAILABILITY_CODES.has(error.code)) {
      // Two answers only, so that clients need to know exactly two codes: 503 certainly not
      // applied, 504 unknown. The original code (e.g. STORE_UNAVAILABLE) is kept as `reason`.
      const reason = error.code === 'UNAVAILABLE' || error.code === 'TIMEOUT' ? {} : { reason: error.code };
      if (maybeApplied(error)) {
        return { status: 504, body: { error: error.message, code: 'TIMEOUT', maybeApplied: true, ...reason } };
      }
      return {
        status: 503,
        body: { error: error.message, code: 'UNAVAILABLE', maybeApplied: false, ...reason },
        retryAfterSeconds: retryAfterSeconds(error),
      };
    }
    if (error.code === 'IDEMPOTENCY_KEY_REUSED') {
      return { status: 422, body: { error: error.message, code: error.code } };
    }
    if (error.code === 'BAD_MESSAGE') return { status: 400, body: { error: error.message, code: error.code } };
    if (error.code === 'UNKNOWN_ENTITY_KIND') return { status: 404, body: { error: error.message, code: error.code } };
    if (error.code === 'DOMAIN_ERROR') {
      // A command's typed refusal (event-sourced entities): the app's own routes usually map
      // it to a status of their own; elsewhere it is a conflict with the entity's state.
      return { status: 409, body: { error: error.message, code: error.code, details: error.details ?? {} } };
    }
    if (error.code === 'HANDLER_ERROR') {
      // The handler's own message (never its stack): the app chose it.
      return { status: 500, body: { error: `entity handler failed: ${error.message}`, code: error.code } };
    }
    return { status: 500, body: { error: 'internal server error', code: error.code } };
  }
  if (isFastifyError(error)) {
    if (error.validation) return { status: 400, body: { error: validationMessage(error) } };
    if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return { status: 413, body: { error: `the body is larger than ${bodyLimit} bytes` } };
    }
    if (error.code === 'FST_ERR_MAX_PARAM_LENGTH') {
      return { status: 400, body: { error: `a path parameter is too long: ids are ${ID_RULE}` } };
    }
    const status = error.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      return { status, body: { error: FASTIFY_MESSAGES[error.code] ?? error.message } };
    }
  }
  return { status: 500, body: { error: 'internal server error' } };
}

/** Retry-After in whole seconds (at least 1) from the error's `retryAfterMs`, when it has one. */
function retryAfterSeconds(error: ConcordError): number {
  const ms = error.details?.['retryAfterMs'];
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms <= 0) return 1;
  return Math.max(1, Math.ceil(ms / 1000));
}

function isFastifyError(error: unknown): error is FastifyError {
  return error instanceof Error && typeof (error as { code?: unknown }).code === 'string';
}

function validationMessage(error: FastifyError): string {
  const first = error.validation?.[0];
  if (!first) return error.message;
  const context = error.validationContext ?? 'request';
  const field = first.instancePath.replace(/^\//, '').replaceAll('/', '.');
  if (context === 'params' && field) return `invalid ${field}: must be ${ID_RULE}`;
  const where = field ? `${context}.${field}` : context;
  if (first.keyword === 'enum') {
    const allowed = (first.params as { allowedValues?: unknown[] }).allowedValues ?? [];
    return `${where} must be one of ${allowed.map((v) => JSON.stringify(v)).join(', ')}`;
  }
  if (first.keyword === 'required') {
    const missing = (first.params as { missingProperty?: string }).missingProperty;
    return `${where} must have the field ${JSON.stringify(missing)}`;
  }
  return `${where} ${first.message ?? 'is invalid'}`;
}

/** Send an answer (used by the error handler and by routes that answer errors themselves). */
export function sendError(reply: FastifyReply, answer: ErrorAnswer): FastifyReply {
  if (answer.retryAfterSeconds !== undefined) reply.header('retry-after', String(answer.retryAfterSeconds));
  return reply.code(answer.status).type('application/json; charset=utf-8').send(answer.body);
}

/**
 * Fastify's `frameworkErrors` option: errors raised before routing (a malformed URL, an
 * over-long path parameter) get the same JSON answers as everything else.
 */
export function frameworkErrorHandler(logger: Logger, bodyLimit: number) {
  return (error: Error, request: FastifyRequest, reply: FastifyReply): void => {
    const answer = errorAnswer(error, bodyLimit);
    logger.debug({ method: request.method, status: answer.status, error: answer.body.error }, 'client error');
    sendError(reply, answer);
  };
}

/**
 * Install the error handler and the not-found handler. Call before any route is added:
 * it records every route's method to tell 404 (no such path) from 405 (wrong method).
 */
export function installErrorHandling(http: FastifyInstance, logger: Logger, bodyLimit: number): void {
  const routes = new RouteIndex();
  http.addHook('onRoute', (route) => routes.add(route.url, route.method));

  http.setErrorHandler((error: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const answer = errorAnswer(error, bodyLimit);
    const fields = { method: request.method, url: request.url, status: answer.status };
    if (answer.status >= 500 && answer.status !== 503 && answer.status !== 504) {
      logger.error({ ...fields, err: error }, 'request failed');
    } else if (answer.status === 503 || answer.status === 504) {
      logger.info({ ...fields, error: answer.body.error }, answer.status === 503 ? 'unavailable' : 'outcome unknown');
    } else logger.debug({ ...fields, error: answer.body.error }, 'client error');
    return sendError(reply, answer);
  });

  http.setNotFoundHandler((request: FastifyRequest, reply: FastifyReply) => {
    const path = request.url.split('?')[0] ?? '/';
    const allowed = routes.methodsFor(path);
    if (allowed.length > 0) {
      reply.header('allow', allowed.join(', '));
      return sendError(reply, { status: 405, body: { error: `method ${request.method} is not allowed on ${path}` } });
    }
    return sendError(reply, { status: 404, body: { error: `no route ${request.method} ${path}` } });
  });
}

/** Route templates (`/entities/:id`) and their methods, to answer 405 with `Allow`. */
class RouteIndex {
  private readonly routes: { pattern: RegExp; methods: Set<string> }[] = [];
  private readonly byUrl = new Map<string, Set<string>>();

  add(url: string, method: string | string[]): void {
    let methods = this.byUrl.get(url);
    if (!methods) {
      methods = new Set();
      this.byUrl.set(url, methods);
      this.routes.push({ pattern: templateToRegExp(url), methods });
    }
    for (const m of Array.isArray(method) ? method : [method]) methods.add(m.toUpperCase());
  }

  methodsFor(path: string): string[] {
    const found = new Set<string>();
    for (const route of this.routes) {
      if (route.pattern.test(path)) for (const m of route.methods) found.add(m);
    }
    return [...found].sort();
  }
}

function templateToRegExp(url: string): RegExp {
  const parts = url.split('/').map((segment) => {
    if (segment.startsWith(':')) return '[^/]+';
    if (segment === '*') return '.*';
    return segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  });
  return new RegExp(`^${parts.join('/')}/?$`);
}
