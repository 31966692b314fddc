import { ConcordError } from '../errors.js';

/**
 * The `Idempotency-Key` request header (draft-ietf-httpapi-idempotency-key-header), for the
 * routes of apps that change entities:
 *
 * ```ts
 * const idempotencyKey = idempotencyKeyOf(request); // undefined without the header; 400 if malformed
 * await node.call(Order, id, 'pay', body, { idempotencyKey });
 * ```
 *
 * The draft defines the value as a Structured Field string, `"8e03978e-40d5-43e8-bc93-6894a57f9324"`;
 * a bare token (`8e03978e-…`) is accepted too, and both name the same key. A key is 1-255
 * printable ASCII characters (inside quotes: spaces allowed, `\"` and `\\` escaped; bare: no
 * spaces, quotes or backslashes). Anything else (several headers or values, parameters, empty,
 * too long, other characters) throws a BAD_MESSAGE error, which the HTTP layer answers 400
 * `{"error": "…", "code": "BAD_MESSAGE"}` — before the entity is called.
 *
 * With the key passed on to `node.call`, a retry of the same request is answered with the first
 * answer (the stored reply) instead of applying the change again, and the same key with another
 * request is refused: `IdempotencyKeyReused`, HTTP 422 `{"error","code":"IDEMPOTENCY_KEY_REUSED"}`.
 */

export const IDEMPOTENCY_KEY_HEADER = 'idempotency-key';
export const MAX_HTTP_IDEMPOTENCY_KEY_LENGTH = 255;

const BARE_KEY = /^[\x21\x23-\x5B\x5D-\x7E]+$/;

/** Anything with Node-style request headers (a Fastify or `node:http` request). */
export interface HasHeaders {
  headers: Record<string, string | string[] | undefined>;
}

/** The request's idempotency key, or undefined when it has none. Throws BAD_MESSAGE (HTTP 400) when malformed. */
export function idempotencyKeyOf(request: HasHeaders): string | undefined {
  return parseIdempotencyKey(request.headers[IDEMPOTENCY_KEY_HEADER]);
}

/** Parse an `Idempotency-Key` header value (see idempotencyKeyOf). */
export function parseIdempotencyKey(header: string | string[] | undefined): string | undefined {
  if (header === undefined) return undefined;
  if (Array.isArray(header)) {
    if (header.length !== 1) throw invalid('send one Idempotency-Key header, not several');
    return parseIdempotencyKey(header[0]);
  }
  const value = header.trim();
  let key: string;
  if (value.startsWith('"')) {
    key = '';
    let i = 1;
    for (;;) {
      if (i >= value.length) throw invalid('the quoted Idempotency-Key has no closing quote');
      const c = value[i]!;
      if (c === '"') break;
      if (c === '\\') {
        const next = value[i + 1];
        if (next !== '"' && next !== '\\') throw invalid('inside quotes only \\" and \\\\ may be escaped');
        key += next;
        i += 2;
        continue;
      }
      const code = c.charCodeAt(0);
      if (code < 0x20 || code > 0x7e) throw invalid('a key is printable ASCII');
      key += c;
      i++;
    }
    if (i !== value.length - 1) {
      throw invalid('the Idempotency-Key must be a single string, e.g. "8e03978e-40d5-43e8" (no lists or parameters)');
    }
  } else {
    if (value.length > 0 && !BARE_KEY.test(value)) {
      throw invalid(
        'an unquoted Idempotency-Key is printable ASCII without spaces, quotes or backslashes; send it as a quoted string, e.g. "8e03978e-40d5-43e8"',
      );
    }
    key = value;
  }
  if (key.length === 0) throw invalid('the Idempotency-Key is empty');
  if (key.length > MAX_HTTP_IDEMPOTENCY_KEY_LENGTH) {
    throw invalid(`the Idempotency-Key is longer than ${MAX_HTTP_IDEMPOTENCY_KEY_LENGTH} characters`);
  }
  return key;
}

function invalid(reason: string): ConcordError {
  return new ConcordError('BAD_MESSAGE', `invalid Idempotency-Key header: ${reason}`);
}
