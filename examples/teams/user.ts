import { defineEventSourcedEntity } from '../../src/index.js';

/**
 * The user of the team-joiner application: an event-sourced entity that decides, alone, which
 * team its user is on. "A user is on at most one team" holds because
 * - one owner in the cluster runs the user's commands, one at a time, on the latest state, and
 * - its events are appended with the version it decided on, so even a stale owner (or any
 *   other writer) that decided on an older state cannot get its event into the stream.
 */

export type TeamEvent =
  | { type: 'TeamJoined'; data: { teamId: string } }
  | { type: 'TeamLeft'; data: { teamId: string } };

export interface UserState {
  teamId: string | null;
}

export const TeamUser = defineEventSourcedEntity('teams.user', {
  initial: (): UserState => ({ teamId: null }),
  apply: (_state, event: TeamEvent): UserState => ({
    teamId: event.type === 'TeamJoined' ? event.data.teamId : null,
  }),
  commands: {
    /** Join `teamId`: nothing to do when already on it; refused when on another team. */
    join: (state, teamId: string, ctx) => {
      if (state.teamId === teamId) return [];
      if (state.teamId !== null) return ctx.reject({ code: 'ALREADY_ON_TEAM', teamId: state.teamId });
      return [{ type: 'TeamJoined', data: { teamId } }];
    },
    /** Leave the current team, if any. */
    leave: (state) => (state.teamId === null ? [] : [{ type: 'TeamLeft', data: { teamId: state.teamId } }]),
  },
  queries: {
    team: (state, _message: undefined, ctx) => ({ teamId: state.teamId, version: ctx.version }),
  },
});

/** The stream prefix of every user's events (`teams.user/<userId>`). */
export const USER_STREAM_PREFIX = `${TeamUser.kind}/`;
