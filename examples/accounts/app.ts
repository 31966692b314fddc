import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { type AppContext, type ConcordApp, idempotencyKeyOf, type ReplicatedMap } from '../../src/index.js';
import { Account } from './account.js';
import { COOKIE_NAME, CookieSigner, clearedCookie, readCookie, type SessionRef, sessionCookie } from './cookies.js';
import { dummyHash, hashPassword, verifyPassword } from './passwords.js';
import { UserSessions } from './sessions.js';
import { LoginThrottle, type ReserveResult } from './throttle.js';

/**
 * The accounts application: the stale-cache problem, solved.
 *
 * - `POST /signup` `{"username","password"}` → 201 `{"username"}`; 409 taken; 400 bad body.
 *   The account entity (one per username) decides and writes through to the store; the
 *   user is then put into the replicated `accounts.users` cache, so every node knows it.
 * - `POST /login` → 200 `{"username"}` + session cookie; 401 on a wrong name or password; 429
 *   `{"error","retryAfterSeconds"}` + `Retry-After` once the username or the client address has
 *   used up its failed attempts (see LoginLimits). The user comes from the local cache; on a
 *   miss (a partition ate the broadcast, or all nodes restarted) it is read through from the
 *   store. The password check costs one scrypt whether or not the user exists.
 * - `GET /me` → 200 `{"username"}`; 401 without a live session.
 * - `POST /logout` → 200 `{"loggedOut"}`: true when the request named a session (a cookie we
 *   signed), which is now ended; false when it named none.
 *
 * Sessions live in one `user-sessions` entity per user (sessions.ts), not in a replicated
 * cache: `/me` asks that entity's owner, and `/logout` answers only once the owner has ended
 * the session durably. So after a 200 from `/logout`, no node serves that session again: every
 * node's `/me` asks the same owner (401), and a node that cannot reach it answers 503. The cost:
 * every `/me` is an entity read (in-process on the owner, one peer round trip elsewhere), and
 * sessions whose owner is cut off are unavailable (503) until it fails over.
 *
 * `Idempotency-Key` (optional; malformed → 400) on the three POSTs:
 * - signup: the key goes to the account entity's `create`, so a retry of a signup that was
 *   applied answers the same 201 instead of "taken"; the key with another password answers
 *   422. The password's salt is derived from the key (and username) so that a retry sends the
 *   entity the same message as the first attempt. A 409 (taken) changed nothing and is not
 *   remembered.
 * - login: the session id is derived from the username and the key, so a retry opens no second
 *   session: it answers the same session cookie. Credentials are checked on every attempt (a
 *   401 is never remembered); the key with another username is just another login.
 * - logout: idempotent by itself (an ended session stays ended, and the answer names the
 *   session the cookie carries, ended or not), so the key is checked and needs nothing stored.
 *
 * Under `--ownership none` there is no store or cluster: every route answers 501.
 */

/**
 * Failed logins allowed per username and per client address within a sliding window; the next
 * attempt answers 429 with Retry-After (when the oldest counted failure leaves the window).
 * Counted at `login-throttle` entities (throttle.ts), so the limits hold across all nodes.
 */
export interface LoginLimits {
  /** Default 10 (env CONCORD_LOGIN_MAX_FAILURES_PER_USER). */
  perUsername: number;
  /** Default 100 (env CONCORD_LOGIN_MAX_FAILURES_PER_ADDRESS). */
  perAddress: number;
  /** Default 15 minutes (env CONCORD_LOGIN_WINDOW_MS). */
  windowMs: number;
}

export interface AccountsOptions {
  /** Key material for cookie MACs; default the cluster secret `CONCORD_SECRET`. */
  secret?: string;
  /** The previous secret during a rotation (cookies signed under it stay valid); default `CONCORD_SECRET_PREVIOUS`. */
  previousSecret?: string;
  /** Session lifetime. Default 7 days. */
  sessionTtlMs?: number;
  /** Login throttling (defaults from the environment, else 10 / 100 per 15 minutes). */
  loginLimits?: Partial<LoginLimits>;
}

interface CachedUser {
  passwordHash: string;
}

function envInt(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined || text.trim() === '') return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1) throw new TypeError(`${name} must be a positive whole number`);
  return value;
}

/** The limits in force: options, else the environment, else the documented defaults. */
export function loginLimits(options: Partial<LoginLimits> = {}): LoginLimits {
  return {
    perUsername: options.perUsername ?? envInt('CONCORD_LOGIN_MAX_FAILURES_PER_USER', 10),
    perAddress: options.perAddress ?? envInt('CONCORD_LOGIN_MAX_FAILURES_PER_ADDRESS', 100),
    windowMs: options.windowMs ?? envInt('CONCORD_LOGIN_WINDOW_MS', 15 * 60_000),
  };
}

interface Credentials {
  Body: { username: string; password: string };
}

const USERNAME = { type: 'string', minLength: 3, maxLength: 64, pattern: '^[A-Za-z0-9_.-]+$' } as const;

function credentials(minPassword: number) {
  return {
    type: 'object',
    required: ['username', 'password'],
    properties: { username: USERNAME, password: { type: 'string', minLength: minPassword, maxLength: 128 } },
  } as const;
}

/**
 * Fastify's validator coerces scalars (`["bob"]` → `"bob"`, `123` → `"123"`); credentials
 * must arrive as JSON strings, so anything else is refused before validation.
 */
async function stringsOnly(request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const body = request.body as Record<string, unknown> | null;
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return; // the schema answers
  for (const field of ['username', 'password']) {
    if (field in body && typeof body[field] !== 'string') {
      await reply.code(400).send({ error: `body/${field} must be a string` });
      return;
    }
  }
}

/** How long signup waits for the other nodes to cache the new user. */
const FLUSH_MS = 500;
const DAY_MS = 24 * 60 * 60 * 1000;

/** The live parts of the app on a coordinated node. */
class Accounts {
  readonly users: ReplicatedMap<string, CachedUser>;
  readonly signer: CookieSigner;

  constructor(
    readonly context: AppContext,
    services: NonNullable<AppContext['services']>,
    secret: string,
    previousSecret: string | undefined,
    readonly ttlMs: number,
    readonly limits: LoginLimits,
  ) {
    this.signer = new CookieSigner(secret, previousSecret);
    this.users = services.replicatedMap<CachedUser>('accounts.users', {
      // Read-through straight from the store: works even when the account's owner is across a partition.
      loader: async (username) => {
        const row = await services.readCommitted(Account, username);
        const hash = row?.state.passwordHash;
        return typeof hash === 'string' ? { passwordHash: hash } : undefined;
      },
    });
  }

  /** The session a request's cookie names (signed by us), live or not. */
  sessionRef(request: FastifyRequest): SessionRef | null {
    const value = readCookie(request.headers.cookie, COOKIE_NAME);
    return value === undefined ? null : this.signer.verify(value);
  }

  /** The user of the live session named by the request's cookie, asked of the session's owner. */
  async sessionUser(request: FastifyRequest): Promise<string | null> {
    const ref = this.sessionRef(request);
    if (ref === null) return null;
    const expiresAt = await this.context.node.call(UserSessions, ref.username, 'check', ref.sid);
    return expiresAt === null ? null : ref.username;
  }

  /**
   * Reserves one login attempt for the username and one for the client address, at their
   * throttle entities. Either refusal gives the other reservation back and is returned; an
   * error (the counter's owner unreachable) gives back what was reserved and is thrown.
   */
  async reserveAttempt(
    username: string,
    address: string,
    token: string,
  ): Promise<{ refused: null } | { refused: 'username' | 'address'; retryAfterMs: number }> {
    const node = this.context.node;
    const { perUsername, perAddress, windowMs } = this.limits;
    const targets = [`user:${username}`, `addr:${address}`] as const;
    const results = await Promise.allSettled([
      node.call(LoginThrottle, targets[0], 'reserve', { token, limit: perUsername, windowMs }),
      node.call(LoginThrottle, targets[1], 'reserve', { token, limit: perAddress, windowMs }),
    ]);
    const reserved = results.map((r) => r.status === 'fulfilled' && r.value.ok);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    const refusals = results.map((r) => (r.status === 'fulfilled' && !r.value.ok ? r.value : null));
    if (failed !== undefined || refusals.some((r) => r !== null)) {
      await this.refund(
        targets.filter((_, i) => reserved[i]),
        token,
      );
      if (failed !== undefined) throw failed.reason;
      const which = refusals[0] !== null ? 0 : 1;
      const retryAfterMs = Math.max(
        ...refusals.map((r: ReserveResult | null) => (r !== null && !r.ok ? r.retryAfterMs : 0)),
      );
      return { refused: which === 0 ? 'username' : 'address', retryAfterMs };
    }
    return { refused: null };
  }

  /** Gives reservations back (best effort: one not given back counts as a failed attempt). */
  async refund(targets: readonly string[], token: string): Promise<void> {
    await Promise.allSettled(targets.map((id) => this.context.node.call(LoginThrottle, id, 'refund', token)));
  }
}

export function createAccountsApp(options: AccountsOptions = {}): ConcordApp {
  const ttlMs = options.sessionTtlMs ?? 7 * DAY_MS;
  let accounts: Accounts | null = null;

  /** The app, or a 501 answer under `--ownership none`. */
  function live(reply: FastifyReply): Accounts | null {
    if (accounts === null) {
      void reply.code(501).send({ error: 'accounts need a coordinated cluster (not available with --ownership none)' });
    }
    return accounts;
  }

  function routes(http: FastifyInstance, context: AppContext): void {
    if (context.services !== null) {
      accounts = new Accounts(
        context,
        context.services,
        options.secret ?? process.env.CONCORD_SECRET ?? '',
        options.previousSecret ?? (process.env.CONCORD_SECRET_PREVIOUS || undefined),
        ttlMs,
        loginLimits(options.loginLimits),
      );
    }

    http.post<Credentials>(
      '/signup',
      { schema: { body: credentials(8) }, preValidation: stringsOnly },
      async (request, reply) => {
        const app = live(reply);
        if (app === null) return reply;
        const idempotencyKey = idempotencyKeyOf(request);
        const username = request.body.username.toLowerCase();
        // With a key, the entity decides even when the cache knows the name: it may be this
        // request's own earlier attempt, whose answer the key replays.
        if (idempotencyKey === undefined && app.users.get(username) !== undefined) {
          return reply.code(409).send({ error: 'username is taken' });
        }
        const passwordHash =
          idempotencyKey === undefined
            ? await hashPassword(request.body.password)
            : await hashPassword(
                request.body.password,
                app.signer.derive('salt', `${username}\u0000${idempotencyKey}`, 16),
              );
        const { created } = await app.context.node.call(
          Account,
          username,
          'create',
          { passwordHash },
          idempotencyKey === undefined ? undefined : { idempotencyKey },
        );
        if (!created) return reply.code(409).send({ error: 'username is taken' });
        app.users.set(username, { passwordHash });
        await app.users.flush(FLUSH_MS);
        return reply.code(201).send({ username });
      },
    );

    http.post<Credentials>(
      '/login',
      { schema: { body: credentials(1) }, preValidation: stringsOnly },
      async (request, reply) => {
        const app = live(reply);
        if (app === null) return reply;
        const idempotencyKey = idempotencyKeyOf(request);
        const username = request.body.username.toLowerCase();
        const token = randomBytes(12).toString('base64url');
        const throttled = await app.reserveAttempt(username, request.ip, token);
        if (throttled.refused !== null) {
          const seconds = Math.max(1, Math.ceil(throttled.retryAfterMs / 1000));
          const who = throttled.refused === 'username' ? 'for this username' : 'from this address';
          return reply
            .code(429)
            .header('retry-after', String(seconds))
            .send({ error: `too many failed logins ${who}; try again in ${seconds} s`, retryAfterSeconds: seconds });
        }
        const user = await app.users.fetch(username);
        // Unknown users cost one scrypt too, with the same parameters, so timing does not tell
        // which names exist (see passwords.ts).
        const ok = await verifyPassword(request.body.password, user?.passwordHash ?? (await dummyHash()));
        if (user === undefined || !ok) return reply.code(401).send({ error: 'wrong username or password' });
        // A success is not a failed attempt: give both reservations back.
        await app.refund([`user:${username}`, `addr:${request.ip}`], token);
        const { sid, value } = app.signer.issue(username, idempotencyKey);
        await app.context.node.call(UserSessions, username, 'open', { sid, ttlMs: app.ttlMs });
        const secure = request.protocol === 'https';
        reply.header('set-cookie', sessionCookie(value, { maxAgeSeconds: Math.floor(app.ttlMs / 1000), secure }));
        return reply.send({ username });
      },
    );

    http.get('/me', async (request, reply) => {
      const app = live(reply);
      if (app === null) return reply;
      const username = await app.sessionUser(request);
      if (username === null) return reply.code(401).send({ error: 'not logged in' });
      return reply.send({ username });
    });

    http.post('/logout', async (request, reply) => {
      const app = live(reply);
      if (app === null) return reply;
      idempotencyKeyOf(request); // checked (400 when malformed); logout needs nothing stored
      const ref = app.sessionRef(request);
      // Answers only once the session's owner has ended it durably (or the call fails: 503 /
      // 504, and the client tries again): from the 200 on, no node accepts the session.
      if (ref !== null) await app.context.node.call(UserSessions, ref.username, 'end', ref.sid);
      reply.header('set-cookie', clearedCookie(request.protocol === 'https'));
      return reply.send({ loggedOut: ref !== null });
    });
  }

  return {
    name: 'accounts',
    entities: [Account, UserSessions, LoginThrottle],
    routes,
  };
}

export const accountsApp: ConcordApp = createAccountsApp();
