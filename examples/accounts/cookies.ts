import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Session cookies: `concord_session=<id>.<mac>`, where id is 24 random bytes (or, for a login
 * with an idempotency key, 24 bytes derived from the username and key) and mac is
 * HMAC-SHA256(id) under a key derived (HKDF) from the cluster secret, so any node can check
 * a cookie another node issued, and nobody without the secret can forge one. The cookie only
 * names a session; whether it is still live is the sessions map's answer (logout deletes it).
 */

export const COOKIE_NAME = 'concord_session';

export class CookieSigner {
  private readonly key: Buffer;
  private readonly derivationKey: Buffer;

  constructor(secret: string) {
    if (secret.length === 0) throw new TypeError('the accounts app needs the cluster secret (CONCORD_SECRET)');
    this.key = Buffer.from(hkdfSync('sha256', secret, 'concord-accounts', 'session cookie mac', 32));
    this.derivationKey = Buffer.from(hkdfSync('sha256', secret, 'concord-accounts', 'idempotent values', 32));
  }

  /**
   * A session id and the cookie value that carries it: random, or, given a `seed` (the
   * username and idempotency key of a login), derived from it, so that a retried login names
   * the same session instead of opening another one.
   */
  issue(seed?: string): { id: string; value: string } {
    const id = (seed === undefined ? randomBytes(24) : this.derive('session id', seed, 24)).toString('base64url');
    return { id, value: `${id}.${this.mac(id)}` };
  }

  /** `bytes` bytes derived from (purpose, input) under the secret: unpredictable without it. */
  derive(purpose: string, input: string, bytes: number): Buffer {
    return createHmac('sha256', this.derivationKey).update(`${purpose}\u0000${input}`).digest().subarray(0, bytes);
  }

  /** The session id of a cookie value, or null if it was not signed with our key. */
  verify(value: string): string | null {
    const dot = value.indexOf('.');
    if (dot <= 0 || value.length > 200) return null;
    const id = value.slice(0, dot);
    const given = Buffer.from(value.slice(dot + 1), 'base64url');
    const expected = Buffer.from(this.mac(id), 'base64url');
    return given.length === expected.length && timingSafeEqual(given, expected) ? id : null;
  }

  private mac(id: string): string {
    return createHmac('sha256', this.key).update(id).digest('base64url');
  }
}

/** The value of cookie `name` in a Cookie header, if present. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export interface CookieOptions {
  maxAgeSeconds: number;
  secure: boolean;
}

export function sessionCookie(value: string, { maxAgeSeconds, secure }: CookieOptions): string {
  const attributes = [`${COOKIE_NAME}=${value}`, 'Path=/', 'HttpOnly', 'SameSite=Lax', `Max-Age=${maxAgeSeconds}`];
  if (secure) attributes.push('Secure');
  return attributes.join('; ');
}

export function clearedCookie(secure: boolean): string {
  return sessionCookie('', { maxAgeSeconds: 0, secure });
}
