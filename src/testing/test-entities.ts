import { defineEntity } from '../entity/define.js';
import { defineEventSourcedEntity } from '../events/entity.js';
import type { RecordedEvent } from '../events/event-store.js';

/**
 * Small entities used by concord's own multi-node tests and benchmarks.
 * `register` is a versioned register (the model the linearizability checker judges).
 */

export interface RegisterReply {
  value: string | null;
  version: number;
}

export const Register = defineEntity('register', {
  initial: () => ({ value: null as string | null }),
  handlers: {
    get: (state, _message: undefined, ctx): RegisterReply => ({ value: state.value, version: ctx.version }),
    set: (_state, value: string, ctx): RegisterReply => {
      ctx.setState({ value });
      return { value, version: ctx.version };
    },
    /** A write whose handler takes `delayMs` before it changes the state (for fencing tests). */
    slowSet: async (_state, message: { value: string; delayMs: number }, ctx): Promise<RegisterReply> => {
      await new Promise((resolve) => setTimeout(resolve, message.delayMs));
      ctx.setState({ value: message.value });
      return { value: message.value, version: ctx.version };
    },
    /** Compare-and-set on the version: applies only if the version is still `expected`. */
    cas: (state, message: { value: string; expected: number }, ctx): RegisterReply & { applied: boolean } => {
      if (ctx.version !== message.expected) return { value: state.value, version: ctx.version, applied: false };
      ctx.setState({ value: message.value });
      return { value: message.value, version: ctx.version, applied: true };
    },
  },
});

export const Counter = defineEntity('counter', {
  initial: () => ({ n: 0 }),
  handlers: {
    get: (state) => state.n,
    add: (state, by: number, ctx) => {
      ctx.setState({ n: state.n + by });
      return state.n + by;
    },
  },
});

export type TeamEvent =
  | { type: 'TeamJoined'; data: { teamId: string } }
  | { type: 'TeamLeft'; data: { teamId: string } };

/**
 * Event-sourced: a user on at most one team. Joining the team one is on is a no-op; joining
 * another is refused with ALREADY_ON_TEAM. A small snapshotEvery so that activations
 * exercise snapshot + tail.
 */
export const TeamMember = defineEventSourcedEntity('es-user', {
  initial: () => ({ teamId: null as string | null }),
  apply: (_state, event: TeamEvent) => ({ teamId: event.type === 'TeamJoined' ? event.data.teamId : null }),
  commands: {
    join: (state, teamId: string, ctx) => {
      if (state.teamId === teamId) return [];
      if (state.teamId !== null) return ctx.reject({ code: 'ALREADY_ON_TEAM', teamId: state.teamId });
      return [{ type: 'TeamJoined', data: { teamId } }];
    },
    leave: (state) => (state.teamId === null ? [] : [{ type: 'TeamLeft', data: { teamId: state.teamId } }]),
  },
  queries: {
    get: (state, _message: undefined, ctx) => ({ teamId: state.teamId, version: ctx.version }),
  },
  snapshotEvery: 4,
});

export type LedgerEvent =
  | { type: 'Deposited'; data: { amount: number } }
  | { type: 'Withdrawn'; data: { amount: number } };

/** Event-sourced: a balance that never goes negative; commands with several events and async commands. */
export const Ledger = defineEventSourcedEntity('es-ledger', {
  initial: () => ({ balance: 0, entries: 0 }),
  apply: (state, event: LedgerEvent) => ({
    balance: state.balance + (event.type === 'Deposited' ? event.data.amount : -event.data.amount),
    entries: state.entries + 1,
  }),
  commands: {
    deposit: (_state, amount: number, ctx) =>
      amount > 0 ? [{ type: 'Deposited', data: { amount } }] : ctx.reject({ code: 'BAD_AMOUNT', amount }),
    depositEach: (_state, amounts: number[]) => amounts.map((amount) => ({ type: 'Deposited', data: { amount } })),
    withdraw: (state, amount: number, ctx) =>
      state.balance < amount
        ? ctx.reject({ code: 'INSUFFICIENT_FUNDS', balance: state.balance })
        : [{ type: 'Withdrawn', data: { amount } }],
    slowDeposit: async (_state, message: { amount: number; delayMs: number }) => {
      await new Promise((resolve) => setTimeout(resolve, message.delayMs));
      return [{ type: 'Deposited', data: { amount: message.amount } }];
    },
  },
  queries: {
    get: (state, _message: undefined, ctx) => ({ ...state, version: ctx.version }),
  },
  snapshotEvery: 10,
});

/** Team membership folded from TeamMember's events: the view the team projection keeps. */
export class TeamsView {
  private readonly users = new Map<string, { version: number; teamId: string | null }>();

  apply(event: RecordedEvent): void {
    const prefix = `${TeamMember.kind}/`;
    if (!event.stream.startsWith(prefix)) return;
    const userId = event.stream.slice(prefix.length);
    const known = this.users.get(userId);
    if (known && known.version >= event.version) return;
    const { teamId } = event.data as { teamId: string };
    this.users.set(userId, { version: event.version, teamId: event.type === 'TeamJoined' ? teamId : null });
  }

  /** teamId → sorted member ids. */
  teams(): Record<string, string[]> {
    const teams: Record<string, string[]> = {};
    for (const [userId, { teamId }] of this.users) {
      if (teamId === null) continue;
      teams[teamId] ??= [];
      teams[teamId].push(userId);
    }
    for (const members of Object.values(teams)) members.sort();
    return teams;
  }
}

export const testEntities = [Register, Counter, TeamMember, Ledger] as const;
