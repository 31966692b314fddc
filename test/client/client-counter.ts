import { fileURLToPath } from 'node:url';
import { defineEntity } from '../../src/entity/define.js';

/** The entities file the client tests' `concord node` processes load. */
export const CLIENT_ENTITIES = fileURLToPath(new URL('../fixtures/client-entities.mjs', import.meta.url));

/**
 * The fixture's `client-counter` (test/fixtures/client-entities.mjs), typed for the client: the
 * client uses only the kind and the handlers' names and types; the nodes run the fixture.
 */
export const ClientCounter = defineEntity('client-counter', {
  initial: () => ({ n: 0 }),
  handlers: {
    get: (state) => state.n,
    add: (state, by: number, ctx) => {
      ctx.setState({ n: state.n + by });
      return state.n + by;
    },
    slow: async (state, _ms: number) => state.n,
    reset: (_state, _m: undefined, ctx) => {
      ctx.setState({ n: 0 });
      return 0;
    },
  },
});
