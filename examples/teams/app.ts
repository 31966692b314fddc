import type { FastifyInstance, FastifyReply } from 'fastify';
import {
  type AppContext,
  type ConcordApp,
  ID_MAX_LENGTH,
  ID_PATTERN,
  idempotencyKeyOf,
  idParamsSchema,
  isDomainError,
  Projection,
} from '../../src/index.js';
import { TeamView } from './team-view.js';
import { TeamUser, USER_STREAM_PREFIX } from './user.js';

/**
 * The team-joiner application: a user is on at most one team, whichever node is asked.
 *
 * - `PUT /users/:userId/team` `{"teamId"}` → 200 `{"userId","teamId"}`; joining the team the
 *   user is already on is a 200 too; 409 `{"error","teamId": <current>}` when on another team
 * - `DELETE /users/:userId/team` → 200 `{"userId","teamId":null}`
 * - both take an optional `Idempotency-Key`: a retry of a change that was applied answers the
 *   same 200 without appending again; the key with another team answers 422. Answers that
 *   changed nothing (already on that team, 409, not on a team) are not remembered.
 * - `GET /users/:userId/team` → 200 `{"userId","teamId"}` (from the user entity: always current)
 * - `GET /teams/:teamId` → 200 `{"teamId","members":[…]}` from this node's projection of the
 *   event log: eventually consistent, it trails the users by about one poll (100 ms)
 *
 * The user entity decides (TeamJoined / TeamLeft); the team view only follows. Under
 * `--ownership none` there is no store and no event log, so every route answers 501.
 */

const POLL_MS = 100;
const idPattern = new RegExp(ID_PATTERN);

interface UserRoute {
  Params: { userId: string };
}

interface TeamRoute {
  Params: { teamId: string };
}

/** One app instance per node process: its projection lives from start() to stop(). */
export function createTeamsApp(): ConcordApp {
  let running: { view: TeamView; projection: Projection } | null = null;

  function unavailable(reply: FastifyReply): FastifyReply {
    return reply
      .code(501)
      .send({ error: 'the teams app needs a coordinated cluster with a store (not --ownership none)' });
  }

  function routes(http: FastifyInstance, { node, services }: AppContext): void {
    const userParams = idParamsSchema('userId');

    http.put<UserRoute>('/users/:userId/team', { schema: { params: userParams } }, async (request, reply) => {
      if (services === null) return unavailable(reply);
      const teamId = teamIdOf(request.body);
      if (teamId === null) {
        return reply.code(400).send({ error: `the body must be {"teamId": <1-${ID_MAX_LENGTH} id characters>}` });
      }
      const { userId } = request.params;
      const idempotencyKey = idempotencyKeyOf(request);
      try {
        await node.call(
          TeamUser,
          userId,
          'join',
          teamId,
          idempotencyKey === undefined ? undefined : { idempotencyKey },
        );
      } catch (error) {
        if (isDomainError<{ code: 'ALREADY_ON_TEAM'; teamId: string }>(error, 'ALREADY_ON_TEAM')) {
          const current = error.error.teamId;
          return reply.code(409).send({ error: `user ${userId} is already on team ${current}`, teamId: current });
        }
        throw error; // 503 when no owner could be reached in time (see src/http/errors.ts)
      }
      return reply.send({ userId, teamId });
    });

    http.delete<UserRoute>('/users/:userId/team', { schema: { params: userParams } }, async (request, reply) => {
      if (services === null) return unavailable(reply);
      const { userId } = request.params;
      const idempotencyKey = idempotencyKeyOf(request);
      await node.call(
        TeamUser,
        userId,
        'leave',
        undefined,
        idempotencyKey === undefined ? undefined : { idempotencyKey },
      );
      return reply.send({ userId, teamId: null });
    });

    http.get<UserRoute>('/users/:userId/team', { schema: { params: userParams } }, async (request, reply) => {
      if (services === null) return unavailable(reply);
      const { userId } = request.params;
      const { teamId } = await node.call(TeamUser, userId, 'team', undefined);
      return reply.send({ userId, teamId });
    });

    http.get<TeamRoute>('/teams/:teamId', { schema: { params: idParamsSchema('teamId') } }, async (request, reply) => {
      if (services === null || running === null) return unavailable(reply);
      const { teamId } = request.params;
      return reply.send({ teamId, members: running.view.members(teamId) });
    });
  }

  return {
    name: 'teams',
    entities: [TeamUser],
    routes,
    start({ services }) {
      if (services === null) return;
      const view = new TeamView();
      // Tails the store-wide log from its beginning: the view is rebuilt on every start.
      const projection = new Projection(services.events, {
        streamPrefix: USER_STREAM_PREFIX,
        apply: (event) => view.apply(event),
        pollMs: POLL_MS,
      });
      projection.start();
      running = { view, projection };
    },
    async stop() {
      const current = running;
      running = null;
      await current?.projection.stop();
    },
  };
}

/** The `teamId` of a PUT body, or null when the body is not `{"teamId": <id>}`. */
function teamIdOf(body: unknown): string | null {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return null;
  const { teamId } = body as { teamId?: unknown };
  if (typeof teamId !== 'string' || teamId.length === 0 || teamId.length > ID_MAX_LENGTH) return null;
  return idPattern.test(teamId) ? teamId : null;
}

export const teamsApp = createTeamsApp();
