/** Compile-time checks of the event-sourced entity API's type inference (checked by `tsc --noEmit`). */
import type { ConcordNode } from '../../src/index.js';
import { type DomainErrorOf, defineEventSourcedEntity, type EntityRef, type EventOf } from '../../src/index.js';

type UserEvent = { type: 'TeamJoined'; data: { teamId: string } } | { type: 'TeamLeft'; data: { teamId: string } };

const User = defineEventSourcedEntity('user', {
  initial: () => ({ teamId: null as string | null }),
  apply: (_state, event: UserEvent) => ({ teamId: event.type === 'TeamJoined' ? event.data.teamId : null }),
  commands: {
    join: (state, teamId: string, ctx) => {
      if (state.teamId === teamId) return [];
      if (state.teamId !== null) return ctx.reject({ code: 'ALREADY_ON_TEAM', teamId: state.teamId });
      return [{ type: 'TeamJoined', data: { teamId } }];
    },
    leave: (state) => (state.teamId === null ? [] : [{ type: 'TeamLeft', data: { teamId: state.teamId } }]),
    slow: async (_state, m: { n: number }) => (m.n > 0 ? [] : []),
  },
  queries: {
    team: (state) => state.teamId,
    at: (state, _m: undefined, ctx) => ({ teamId: state.teamId, version: ctx.version }),
  },
});

declare const node: ConcordNode;
declare const ref: EntityRef<typeof User.handlers>;
const joined: Promise<{ state: { teamId: string | null }; version: number; events: UserEvent[] }> = ref.join('red');
const left = ref.leave();
const team: Promise<string | null> = ref.team();
const at: Promise<{ teamId: string | null; version: number }> = ref.at();
const viaCall: Promise<{ version: number }> = node.call(User, 'sue', 'join', 'blue');
const viaRef = node.ref(User, 'sue').slow({ n: 1 });
// @ts-expect-error wrong message type
ref.join(3);
// @ts-expect-error missing message
ref.join();
// @ts-expect-error no such handler
ref.nothing();

type JoinError = DomainErrorOf<typeof User, 'join'>;
const e: JoinError = { code: 'ALREADY_ON_TEAM', teamId: 'x' };
// @ts-expect-error the code is a literal type
const wrong: JoinError = { code: 'OTHER', teamId: 'x' };
const ev: EventOf<typeof User> = { type: 'TeamLeft', data: { teamId: 'x' } };

defineEventSourcedEntity('bad', {
  initial: () => ({ n: 0 }),
  apply: (state, _event: { type: 'Added'; data: number }) => state,
  commands: {
    // @ts-expect-error an event that is not of the entity's event type
    add: () => [{ type: 'Removed', data: 1 }],
  },
});

void [joined, left, team, at, viaCall, viaRef, e, wrong, ev];

const NoQueries = defineEventSourcedEntity('no-queries', {
  initial: () => 0,
  apply: (n, _event: { type: 'Added'; data: number }) => n + 1,
  commands: { add: (_n, by: number) => [{ type: 'Added', data: by }] },
});
declare const ref2: EntityRef<typeof NoQueries.handlers>;
const added: Promise<{ state: number }> = ref2.add(1);
// @ts-expect-error no such handler
ref2.nothing();
void added;
