/** Compile-time checks of the client's type inference (checked by `npm run lint`). */
import { type ClientRef, createClient, Timeout, Unavailable } from '../../src/client/index.js';
import { defineEntity } from '../../src/entity/define.js';

const Counter = defineEntity('counter', {
  initial: () => ({ n: 0 }),
  handlers: {
    get: (state) => state.n,
    add: (state, by: number, ctx) => {
      ctx.setState({ n: state.n + by });
      return state.n + by;
    },
    label: async (state, m: { prefix: string }) => `${m.prefix}${state.n}`,
  },
  exposed: ['get', 'add'],
});

defineEntity('y', {
  initial: () => ({ n: 0 }),
  handlers: { get: (state) => state.n },
  // @ts-expect-error only handler names may be exposed
  exposed: ['nope'],
});

const client = createClient({ nodes: ['http://127.0.0.1:4001'], entities: [Counter], deadlineMs: 500 });
const counter: ClientRef<typeof Counter.handlers> = client.ref(Counter, 'c1');
const a: Promise<number> = counter.get();
const b: Promise<number> = counter.add(3, { idempotencyKey: 'k1', deadlineMs: 100 });
const c: Promise<string> = counter.label({ prefix: '#' });
// @ts-expect-error wrong message type
counter.add('x');
// @ts-expect-error missing message
counter.add();
// @ts-expect-error no such handler
counter.remove(1);
// @ts-expect-error unknown call option
counter.get(undefined, { retries: 3 });
// @ts-expect-error the reply is a number
const d: Promise<string> = counter.get();
const isRetryable = (e: unknown): boolean => e instanceof Unavailable || e instanceof Timeout;
void [a, b, c, d, isRetryable];
