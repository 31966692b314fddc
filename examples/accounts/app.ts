import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { type AppContext, type ConcordApp, idempotencyKeyOf, type ReplicatedMap } from '../../src/index.js';
import { Account } from './account.js';
import { COOKIE_NAME, CookieSigner, clearedCookie, readCookie, sessionCookie } from './cookies.js';
import { dummyHash, hashPassword, verifyPassword } from './passwords.js';

/**
 * The accounts application: the stale-cache problem, solved.
 *
 * - `POST /signup` `{"username","password"}` → 201 `{"username"}`; 409 taken; 400 bad body.
 *   The account entity (one per username) decides and writes through to the store; the
 *   user is then put into the replicated `accounts.users` cache, so every node knows it.
 * - `POST /login` → 200 `{"username"}` + session cookie; 401 on a wrong name or password.
 *   The user comes from the local cache; on a miss (a partition ate the broadcast, or all
 *   nodes restarted) it is read through from the store.
 * - `GET /me` → 200 `{"username"}`; 401 without a live session.
 * - `POST /logout` → 200 `{"loggedOut"}`: true when the request named a session (a cookie we
 *   signed), which is now over on every node (deleted from the replicated `accounts.sessions`
 *   map); false when it named none.
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
 * Login and logout answer once every reachable node has applied the session change
 * (`flush`), so a cookie works, or stops working, on every connected node at once.
 * Under `--ownership none` there is no store or cluster: every route answers 501.
 */

export interface AccountsOptions {
  /** Key material for cookie MACs; default the cluster secret `CONCORD_SECRET`. */
  secret?: string;
  /** Session lifetime. Default 7 days. */
  sessionTtlMs?: number;
}

interface CachedUser {
  passwordHash: string;
}

interface Session {
  username: string;
  /** Wall-clock ms. */
  expiresAt: number;
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

/** How long login/signup/logout wait for the other nodes to apply their change. */
const FLUSH_MS = 500;
const SWEEP_MS = 60_000;
const DAY_MS = 24 * 60 * 60 * 1000;

/** The live parts of the app on a coordinated node. */
class Accounts {
  readonly users: ReplicatedMap<string, CachedUser>;
  readonly sessions: ReplicatedMap<string, Session>;
  readonly signer: CookieSigner;
  private sweeper: NodeJS.Timeout | null = null;

  constructor(
    readonly context: AppContext,
    services: NonNullable<AppContext['services']>,
    secret: string,
    readonly ttlMs: number,
  ) {
    this.signer = new CookieSigner(secret);
    this.users = services.replicatedMap<CachedUser>('accounts.users', {
      // Read-through straight from the store: works even when the account's owner is across a partition.
      loader: async (username) => {
        const row = await services.readCommitted(Account, username);
        const hash = row?.state.passwordHash;
        return typeof hash === 'string' ? { passwordHash: hash } : undefined;
      },
    });
    this.sessions = services.replicatedMap<Session>('accounts.sessions');
  }

  /** The session id a request's cookie names (signed by us), live or not. */
  sessionId(request: FastifyRequest): string | null {
    const value = readCookie(request.headers.cookie, COOKIE_NAME);
    return value === undefined ? null : this.signer.verify(value);
  }

  /** The live session named by the request's cookie. */
  session(request: FastifyRequest): { id: string; session: Session } | null {
    const id = this.sessionId(request);
    const session = id === null ? undefined : this.sessions.get(id);
    if (id === null || session === undefined || session.expiresAt <= Date.now()) return null;
    return { id, session };
  }

  startSweeping(): void {
    this.sweeper = setInterval(() => {
      const now = Date.now();
      for (const [id, session] of this.sessions) if (session.expiresAt <= now) this.sessions.delete(id);
    }, SWEEP_MS);
    this.sweeper.unref();
  }

  stop(): void {
    if (this.sweeper !== null) clearInterval(this.sweeper);
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
      accounts = new Accounts(context, context.services, options.secret ?? process.env.CONCORD_SECRET ?? '', ttlMs);
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
        const user = await app.users.fetch(username);
        // Unknown users cost one scrypt too, so timing does not tell which names exist.
        const ok = await verifyPassword(request.body.password, user?.passwordHash ?? (await dummyHash()));
        if (user === undefined || !ok) return reply.code(401).send({ error: 'wrong username or password' });
        const { id, value } = app.signer.issue(
          idempotencyKey === undefined ? undefined : `${username}\u0000${idempotencyKey}`,
        );
        app.sessions.set(id, { username, expiresAt: Date.now() + app.ttlMs });
        await app.sessions.flush(FLUSH_MS);
        const secure = request.protocol === 'https';
        reply.header('set-cookie', sessionCookie(value, { maxAgeSeconds: Math.floor(app.ttlMs / 1000), secure }));
        return reply.send({ username });
      },
    );

    http.get('/me', async (request, reply) => {
      const app = live(reply);
      if (app === null) return reply;
      const current = app.session(request);
      if (current === null) return reply.code(401).send({ error: 'not logged in' });
      return reply.send({ username: current.session.username });
    });

    http.post('/logout', async (request, reply) => {
      const app = live(reply);
      if (app === null) return reply;
      idempotencyKeyOf(request); // checked (400 when malformed); logout needs nothing stored
      const id = app.sessionId(request);
      if (id !== null && app.sessions.get(id) !== undefined) {
        app.sessions.delete(id);
        await app.sessions.flush(FLUSH_MS);
      }
      reply.header('set-cookie', clearedCookie(request.protocol === 'https'));
      return reply.send({ loggedOut: id !== null });
    });
  }

  return {
    name: 'accounts',
    entities: [Account],
    routes,
    start: () => accounts?.startSweeping(),
    stop: () => accounts?.stop(),
  };
}

export const accountsApp: ConcordApp = createAccountsApp();
