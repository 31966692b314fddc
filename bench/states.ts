/** The states every driver's sets cycle through (entity-state's `set`), the same for every system. */
export const STATES = ['working', 'finalized', 'initialized'] as const;
