/** Compile-time checks of the entity API's type inference (checked by `npm run lint`). */
import { defineEntity, type EntityRef } from '../../src/entity/define.js';

const Counter = defineEntity('counter', {
  initial: () => ({ n: 0 }),
  handlers: {
    get: (state) => state.n,
    add: (state, by: number, ctx) => {
      ctx.setState({ n: state.n + by });
      return state.n + by;
    },
    slow: async (state, m: { x: string }) => m.x + state.n,
  },
});
declare const ref: EntityRef<typeof Counter.handlers>;
const a: Promise<number> = ref.get();
const b: Promise<number> = ref.add(3);
const c: Promise<string> = ref.slow({ x: 'q' });
// @ts-expect-error wrong message type
ref.add('x');
// @ts-expect-error missing message
ref.add();
defineEntity('x', {
  initial: () => ({ n: 0 }),
  handlers: {
    set: (_s, _m: number, ctx) => {
      // @ts-expect-error a state of the wrong shape
      ctx.setState({ q: 1 });
    },
  },
});
void a;
void b;
void c;
