import { ConcordError, defineEntity } from '../../src/index.js';

/**
 * The entity of the classic split-entity walk-through: a worker per id whose state moves
 * between `initialized`, `working` and `finalized`. Every accepted `set` is a change, so
 * `version` counts acknowledged changes (0 for an entity never written).
 */

export const STATES = ['initialized', 'working', 'finalized'] as const;
export type EntityStateName = (typeof STATES)[number];

export interface Snapshot {
  state: EntityStateName;
  version: number;
}

export interface SetMessage {
  state: EntityStateName;
  /** Apply only if the entity's version is still this (HTTP `If-Match`). */
  ifMatch?: number;
}

export type SetResult = ({ ok: true } & Snapshot) | ({ ok: false } & Snapshot);

export const EntityState = defineEntity('entity-state', {
  initial: (): { state: EntityStateName } => ({ state: 'initialized' }),
  handlers: {
    get: (state, _message: undefined, ctx): Snapshot => ({ state: state.state, version: ctx.version }),
    // The If-Match check runs inside the entity's turn, so no other change can slip in
    // between the comparison and the write: it is a compare-and-set on the version.
    set: (state, message: SetMessage, ctx): SetResult => {
      // `set` is exposed to outside clients, whose messages no route schema has checked.
      checkSetMessage(message);
      if (message.ifMatch !== undefined && message.ifMatch !== ctx.version) {
        return { ok: false, state: state.state, version: ctx.version };
      }
      ctx.setState({ state: message.state });
      return { ok: true, state: message.state, version: ctx.version };
    },
  },
  // Outside clients (concord-cluster/client) may call both over POST /entity-calls/entity-state/:id/:method.
  exposed: ['get', 'set'],
});

function checkSetMessage(message: SetMessage): void {
  const valid =
    typeof message === 'object' &&
    message !== null &&
    (STATES as readonly unknown[]).includes(message.state) &&
    (message.ifMatch === undefined || (Number.isInteger(message.ifMatch) && message.ifMatch >= 0));
  if (!valid) {
    throw new ConcordError('BAD_MESSAGE', `set takes {"state": one of ${STATES.join(', ')}, "ifMatch"?: a version}`);
  }
}
