import { defineEntity } from '../../src/index.js';

/**
 * The sessions of one user: an entity per (lowercased) username, holding its live session ids
 * and when each expires. Sessions are validated here, at the entity's single owner, not in a
 * replicated cache: `/me` asks the owner (`check`, a read answered from its memory), `/logout`
 * ends the session there (`end`, a write that is durable before it answers). Because the owner
 * is the only place a session is decided, and reads and writes of one entity are linearizable,
 * a session that `/logout` ended is refused by every later `/me` on every node — no waiting for
 * replicas, and a node that cannot reach the owner answers 503 instead of a stale 200.
 *
 * Times are wall-clock ms of whichever node owns the entity (the owner sets them inside the
 * turn; messages carry no times, so retries send the same message).
 */

/** At most this many live sessions per user: the oldest is ended when another one opens. */
export const MAX_SESSIONS_PER_USER = 100;

export interface SessionsState {
  /** Session id → expiry (wall-clock ms). */
  s: Record<string, number>;
}

export interface OpenMessage {
  sid: string;
  ttlMs: number;
}

function live(sessions: Record<string, number>, now: number): [string, number][] {
  return Object.entries(sessions).filter(([, expiresAt]) => expiresAt > now);
}

export const UserSessions = defineEntity('user-sessions', {
  initial: (): SessionsState => ({ s: {} }),
  handlers: {
    /** Opens (or, for the same id, extends) a session; expired and surplus ones go. */
    open: (state, message: OpenMessage, ctx): { expiresAt: number } => {
      const now = Date.now();
      const expiresAt = now + message.ttlMs;
      const kept = live(state.s, now).filter(([sid]) => sid !== message.sid);
      kept.sort((a, b) => a[1] - b[1]);
      const room = kept.slice(Math.max(0, kept.length - (MAX_SESSIONS_PER_USER - 1)));
      ctx.setState({ s: Object.fromEntries([...room, [message.sid, expiresAt]]) });
      return { expiresAt };
    },
    /** The session's expiry if it is live, else null. A read: answered from the owner's memory. */
    check: (state, sid: string): number | null => {
      const expiresAt = Object.hasOwn(state.s, sid) ? state.s[sid] : undefined;
      return expiresAt !== undefined && expiresAt > Date.now() ? expiresAt : null;
    },
    /** Ends the session (a durable write before it answers); `ended` false when it was not live. */
    end: (state, sid: string, ctx): { ended: boolean } => {
      if (!Object.hasOwn(state.s, sid)) return { ended: false };
      const now = Date.now();
      ctx.setState({ s: Object.fromEntries(live(state.s, now).filter(([id]) => id !== sid)) });
      return { ended: true };
    },
  },
});
