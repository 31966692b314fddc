import { defineEntity } from '../../src/index.js';

/**
 * One entity per username: the durable record of an account. Its owner is the only place a
 * signup is decided, so two signups of one name on two nodes at once race safely: the first
 * turn creates the account, the second finds it taken. The state is written through to the
 * store (fenced) before `create` answers.
 *
 * The signup time is taken inside the turn, not passed in the message: a message must be the
 * same on every retry of one request for its idempotency key to match (see app.ts).
 */

export interface AccountState {
  /** scrypt hash (see passwords.ts); null while nobody has signed up under this name. */
  passwordHash: string | null;
  /** Store-independent wall-clock ms of the signup, for people reading the table. */
  createdAt: number | null;
}

export interface CreateMessage {
  passwordHash: string;
}

export const Account = defineEntity('account', {
  initial: (): AccountState => ({ passwordHash: null, createdAt: null }),
  handlers: {
    create: (state, message: CreateMessage, ctx): { created: boolean } => {
      if (state.passwordHash !== null) return { created: false };
      ctx.setState({ passwordHash: message.passwordHash, createdAt: Date.now() });
      return { created: true };
    },
  },
});
