import { type ConcordError, errorFromShape, Timeout, Unavailable } from '../errors.js';

/**
 * A node's JSON error answer as the concord error it stands for, so that callers of the client
 * branch on the same classes and codes as callers inside the cluster: 503 → Unavailable
 * (maybeApplied false), 504 → Timeout (maybeApplied true), 422 → IdempotencyKeyReused,
 * 409 → DomainError, 400 → BAD_MESSAGE, 404 → UNKNOWN_ENTITY_KIND, 500 → HANDLER_ERROR.
 */

export interface ErrorBody {
  error?: unknown;
  code?: unknown;
  details?: unknown;
  [field: string]: unknown;
}

const CODE_BY_STATUS: Record<number, string> = {
  400: 'BAD_MESSAGE',
  404: 'UNKNOWN_ENTITY_KIND',
  409: 'DOMAIN_ERROR',
  422: 'IDEMPOTENCY_KEY_REUSED',
  500: 'HANDLER_ERROR',
  503: 'UNAVAILABLE',
  504: 'TIMEOUT',
};

export function errorFromAnswer(status: number, body: ErrorBody | null, where: string): ConcordError {
  const message = typeof body?.error === 'string' ? body.error : `HTTP ${status} from ${where}`;
  const { error: _error, code: _code, details, ...fields } = body ?? {};
  if (status === 503) return new Unavailable(message, { ...fields, status, node: where });
  if (status === 504) return new Timeout(message, { ...fields, status, node: where });
  const code = typeof body?.code === 'string' ? body.code : (CODE_BY_STATUS[status] ?? 'HANDLER_ERROR');
  // A domain error's details are the command's own payload: passed on untouched.
  if (code === 'DOMAIN_ERROR' && isRecord(details))
    return errorFromShape({ code, name: 'DomainError', message, details });
  const extra = isRecord(details) ? details : fields;
  return errorFromShape({ code, name: 'ConcordError', message, details: { ...extra, status } });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
