import { defineEntity } from '../../src/index.js';

/**
 * Login throttling shared by every node: one `login-throttle` entity per username
 * (`user:<name>`) and per client address (`addr:<ip>`). Each holds the failed login attempts of
 * the last window. Before checking a password a login *reserves* an attempt on both (a write:
 * the count is in the store, at the entity's single owner, whichever node the attempt came
 * to); a successful login gives its reservation back. So an attacker who spreads attempts over
 * every node meets the same counter as one who sends them all to one node, and concurrent
 * attempts cannot all slip past a check before any of them is counted.
 *
 * Limits and window come with each message (the app's configuration); times are the owner's
 * wall clock.
 */

export interface ThrottleState {
  /** Attempts counted in the window: [wall-clock ms, token]. */
  a: [number, string][];
}

export interface ReserveMessage {
  /** Identifies this attempt, to give it back on success. */
  token: string;
  limit: number;
  windowMs: number;
}

export type ReserveResult = { ok: true } | { ok: false; retryAfterMs: number };

export const LoginThrottle = defineEntity('login-throttle', {
  initial: (): ThrottleState => ({ a: [] }),
  handlers: {
    reserve: (state, message: ReserveMessage, ctx): ReserveResult => {
      const now = Date.now();
      const recent = state.a.filter(([at]) => at > now - message.windowMs);
      if (recent.length >= message.limit) {
        const oldest = Math.min(...recent.map(([at]) => at));
        return { ok: false, retryAfterMs: Math.max(1, oldest + message.windowMs - now) };
      }
      ctx.setState({ a: [...recent, [now, message.token]] });
      return { ok: true };
    },
    /** Gives back the attempt `token` reserved (the login succeeded, or was not tried). */
    refund: (state, token: string, ctx): boolean => {
      if (!state.a.some(([, t]) => t === token)) return false;
      ctx.setState({ a: state.a.filter(([, t]) => t !== token) });
      return true;
    },
  },
});
