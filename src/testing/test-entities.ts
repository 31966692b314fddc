import { defineEntity } from '../entity/define.js';

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

export const testEntities = [Register, Counter] as const;
