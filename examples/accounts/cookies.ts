import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Session cookies: `concord_session=<username>.<id>.<mac>`, where username is base64url of the
 * (lowercased) username — it names the `user-sessions` entity that decides whether the session
 * is live — id is 24 random bytes (or, for a login with an idempotency key, 24 bytes derived from
 * the username and key), and mac is HMAC-SHA256 of `username NUL id` under a key derived (HKDF)
 * from the cluster secret, so any node can check a cookie another node issued, and nobody
 * without the secret can forge one or move a session to another user. The cookie only names a
 * session; whether it is still live is the entity's answer (logout ends it there).
 *
 * Key derivation: `HKDF-SHA256(ikm = CONCORD_SECRET, salt = "concord-accounts",
 * info = "session cookie mac" | "idempotent values", 32 bytes)`. During a secret rotation the
 * signer is built from both secrets: cookies are signed under the current one and accepted
 * under either, so sessions survive the rotation; once the previous secret is dropped, cookies
 * signed under it stop working (their users log in again).
 */

export const COOKIE_NAME = 'concord_session';

export interface SessionRef {
  username: string;
  sid: string;
}

function keysOf(secret: string): { mac: Buffer; derivation: Buffer } {
  return {
    mac: Buffer.from(hkdfSync('sha256', secret, 'concord-accounts', 'session cookie mac', 32)),
    derivation: Buffer.from(hkdfSync('sha256', secret, 'concord-accounts', 'idempotent values', 32)),
  };
}

export class CookieSigner {
  /** MAC keys, the current secret's first. */
  private readonly macKeys: Buffer[];
  private readonly derivationKey: Buffer;

  constructor(secret: string, previousSecret?: string) {
    if (secret.length === 0) throw new TypeError('the accounts app needs the cluster secret (CONCORD_SECRET)');
    const current = keysOf(secret);
    this.macKeys = [current.mac];
    if (previousSecret !== undefined && previousSecret !== '' && previousSecret !== secret) {
      this.macKeys.push(keysOf(previousSecret).mac);
    }
    this.derivationKey = current.derivation;
  }

  /**
   * A session id for `username` and the cookie value that carries it: random, or, given a `seed`
   * (the idempotency key of a login), derived from it, so that a retried login names the same
   * session instead of opening another one.
   */
  issue(username: string, seed?: string): { sid: string; value: string } {
    const sid = (
      seed === undefined ? randomBytes(24) : this.derive('session id', `${username}\u0000${seed}`, 24)
    ).toString('base64url');
    const user = Buffer.from(username, 'utf8').toString('base64url');
    return { sid, value: `${user}.${sid}.${this.mac(this.macKeys[0]!, username, sid)}` };
  }

  /** `bytes` bytes derived from (purpose, input) under the secret: unpredictable without it. */
  derive(purpose: string, input: string, bytes: number): Buffer {
    return createHmac('sha256', this.derivationKey).update(`${purpose}\u0000${input}`).digest().subarray(0, bytes);
  }

  /** The user and session id of a cookie value, or null if it was not signed with one of our keys. */
  verify(value: string): SessionRef | null {
    if (value.length > 400) return null;
    const parts = value.split('.');
    if (parts.length !== 3 || parts.some((part) => !/^[A-Za-z0-9_-]+$/.test(part))) return null;
    const [user, sid, mac] = parts as [string, string, string];
    const username = Buffer.from(user, 'base64url').toString('utf8');
    const given = Buffer.from(mac, 'base64url');
    let ok = false;
    for (const key of this.macKeys) {
      const expected = Buffer.from(this.mac(key, username, sid), 'base64url');
      // Every key is tried (no early exit), each comparison in constant time.
      if (given.length === expected.length && timingSafeEqual(given, expected)) ok = true;
    }
    return ok ? { username, sid } : null;
  }

  private mac(key: Buffer, username: string, sid: string): string {
    return createHmac('sha256', key).update(`${username}\u0000${sid}`).digest('base64url');
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
