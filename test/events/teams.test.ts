/**
 * The team-joiner application over HTTP on a real 3-node cluster (the `concord node` command,
 * real sockets, real stores): INTERFACE.md's teams rows, the classic two-server race, and a
 * randomized stress with a node killed and restarted, checked against the users' streams.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventStore, type RecordedEvent } from '../../src/events/event-store.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/types.js';
import { type ClusterNode, type HttpResult, LocalCluster } from '../../src/testing/local-cluster.js';
import { backends, freshStoreUrl, sleep } from '../support/cluster.js';

const USER_STREAM = 'teams.user/';

interface TeamAnswer {
  userId: string;
  teamId: string | null;
  error?: string;
}

interface MembersAnswer {
  teamId: string;
  members: string[];
}

/** Which team a stream says the user is on after each version; throws if the stream ever breaks the invariant. */
function replay(userId: string, events: RecordedEvent[]): { teamId: string | null; at: number }[] {
  const states: { teamId: string | null; at: number }[] = [{ teamId: null, at: 0 }];
  let teamId: string | null = null;
  events.forEach((event, i) => {
    if (event.version !== i + 1) throw new Error(`${userId}: version ${event.version} at position ${i + 1}`);
    const data = event.data as { teamId: string };
    if (event.type === 'TeamJoined') {
      if (teamId !== null) throw new Error(`${userId} joined ${data.teamId} at v${event.version} while on ${teamId}`);
      teamId = data.teamId;
    } else if (event.type === 'TeamLeft') {
      if (teamId !== data.teamId)
        throw new Error(`${userId} left ${data.teamId} at v${event.version} while on ${teamId}`);
      teamId = null;
    } else {
      throw new Error(`${userId}: unexpected event ${event.type}`);
    }
    states.push({ teamId, at: event.at });
  });
  return states;
}

describe.each(backends)('the team-joiner app (%s)', (backend) => {
  let cluster: LocalCluster;
  let store: Store;
  let events: EventStore;
  let n1: ClusterNode;
  let n2: ClusterNode;
  let n3: ClusterNode;

  beforeAll(async () => {
    const url = await freshStoreUrl(backend);
    cluster = await LocalCluster.start({ nodes: 3, store: url });
    [n1, n2, n3] = cluster.nodes as [ClusterNode, ClusterNode, ClusterNode];
    store = await openStore(url);
    events = new EventStore(store);
  });

  afterAll(async () => {
    await cluster?.stop();
    await store?.close();
  });

  const join = (node: ClusterNode, userId: string, teamId: string) =>
    node.put<TeamAnswer>(`/users/${userId}/team`, { teamId });
  const leave = (node: ClusterNode, userId: string) => node.request<TeamAnswer>('DELETE', `/users/${userId}/team`);
  const teamOf = (node: ClusterNode, userId: string) => node.get<TeamAnswer>(`/users/${userId}/team`);
  const members = (node: ClusterNode, teamId: string) => node.get<MembersAnswer>(`/teams/${teamId}`);

  it('answers the teams rows of INTERFACE.md on every node', async () => {
    for (const node of cluster.nodes) {
      expect(await teamOf(node, 'sue')).toMatchObject({ status: 200, body: { userId: 'sue', teamId: null } });
    }
    expect(await join(n1, 'sue', 'red')).toMatchObject({ status: 200, body: { userId: 'sue', teamId: 'red' } });
    // Joining the team one is on is a success that changes nothing.
    expect(await join(n2, 'sue', 'red')).toMatchObject({ status: 200, body: { userId: 'sue', teamId: 'red' } });
    const conflict = await join(n3, 'sue', 'blue');
    expect(conflict.status).toBe(409);
    expect(conflict.body).toEqual({ error: expect.any(String), teamId: 'red' });
    for (const node of cluster.nodes) {
      expect((await teamOf(node, 'sue')).body).toEqual({ userId: 'sue', teamId: 'red' });
    }
    // The team view follows the events (eventually) on every node.
    await cluster.eventually(async () => {
      for (const node of cluster.nodes) {
        const { status, body } = await members(node, 'red');
        if (status !== 200 || !body.members.includes('sue')) throw new Error(`${node.name}: ${JSON.stringify(body)}`);
      }
    });
    expect((await members(n2, 'red')).body).toEqual({ teamId: 'red', members: ['sue'] });
    expect(await members(n1, 'nobody-team')).toMatchObject({
      status: 200,
      body: { teamId: 'nobody-team', members: [] },
    });

    expect(await leave(n2, 'sue')).toMatchObject({ status: 200, body: { userId: 'sue', teamId: null } });
    expect(await leave(n3, 'sue')).toMatchObject({ status: 200, body: { userId: 'sue', teamId: null } });
    expect((await teamOf(n1, 'sue')).body).toEqual({ userId: 'sue', teamId: null });
    expect(await join(n3, 'sue', 'blue')).toMatchObject({ status: 200, body: { teamId: 'blue' } });
    await cluster.eventually(async () => {
      for (const node of cluster.nodes) {
        const [red, blue] = await Promise.all([members(node, 'red'), members(node, 'blue')]);
        if (red.body.members.length !== 0 || blue.body.members[0] !== 'sue') throw new Error(`${node.name} lags`);
      }
    });
    // The stream: joined red, left red, joined blue — the idempotent join and the second leave appended nothing.
    const stream = await events.read(`${USER_STREAM}sue`);
    expect(stream.map((e) => [e.version, e.type, (e.data as { teamId: string }).teamId])).toEqual([
      [1, 'TeamJoined', 'red'],
      [2, 'TeamLeft', 'red'],
      [3, 'TeamJoined', 'blue'],
    ]);
  });

  it('answers 400 with a JSON error for bad bodies and ids, and keeps serving', async () => {
    const bad: [string, string, unknown][] = [
      ['PUT', '/users/bob/team', '{"teamId":'],
      ['PUT', '/users/bob/team', {}],
      ['PUT', '/users/bob/team', { teamId: 5 }],
      ['PUT', '/users/bob/team', { teamId: '' }],
      ['PUT', '/users/bob/team', { teamId: 'has space' }],
      ['PUT', '/users/bob/team', { teamId: 'x'.repeat(201) }],
      ['PUT', '/users/bob/team', ['red']],
      ['PUT', '/users/bob/team', 'null'],
      ['PUT', `/users/${'u'.repeat(201)}/team`, { teamId: 'red' }],
      ['GET', '/users/b%20b/team', undefined],
      ['DELETE', `/users/${'u'.repeat(201)}/team`, undefined],
      ['GET', '/teams/bad%2Fteam', undefined],
    ];
    for (const [method, path, body] of bad) {
      const answer = await n1.request<{ error: string }>(method, path, { body });
      expect({ method, path, status: answer.status }).toEqual({ method, path, status: 400 });
      expect(typeof answer.body.error).toBe('string');
    }
    expect((await teamOf(n1, 'bob')).body).toEqual({ userId: 'bob', teamId: null });
    expect(await events.version(`${USER_STREAM}bob`)).toBe(0);
    expect((await join(n1, 'bob', 'red')).status).toBe(200);
  });

  it('the classic race: join A via node 1 and join B via node 2 at once, 50 rounds: one 200, one 409', async () => {
    const user = 'racer';
    let aWins = 0;
    for (let round = 0; round < 50; round++) {
      const [a, b] = await Promise.all([join(n1, user, 'A'), join(n2, user, 'B')]);
      const statuses = [a.status, b.status].sort();
      expect({ round, statuses }).toEqual({ round, statuses: [200, 409] });
      const [winner, loser] = a.status === 200 ? [a, b] : [b, a];
      if (winner === a) aWins++;
      // The loser is told the winner's team, and the user is on the winner's team.
      expect(loser.body.teamId).toBe(winner.body.teamId);
      expect((await teamOf(n3, user)).body.teamId).toBe(winner.body.teamId);
      expect((await leave(round % 2 ? n1 : n2, user)).status).toBe(200);
    }
    const stream = await events.read(`${USER_STREAM}${user}`);
    expect(stream).toHaveLength(100);
    replay(user, stream); // never two joins in a row
    console.log(`[${backend}] race: 50 rounds, node 1 won ${aWins}, node 2 won ${50 - aWins}`);
  });

  it('randomized stress with a node killed and restarted: the streams keep the invariant and every acknowledged command', {
    timeout: 120_000,
  }, async () => {
    const USERS = 200;
    const TEAMS = ['t0', 't1', 't2', 't3', 't4'];
    const CLIENTS = 24;
    const DURATION_MS = 12_000;
    const users = Array.from({ length: USERS }, (_, i) => `s${i}`);

    interface Acked {
      userId: string;
      /** The team the user was on when the command took effect, per its answer. */
      teamId: string | null;
      start: number;
      end: number;
      what: string;
    }
    const acked: Acked[] = [];
    const counts = { ok: 0, conflict: 0, unavailable: 0, unknown: 0, failed: 0 };
    let killed = false;
    const started = Date.now();

    const client = async (seed: number) => {
      let x = seed * 7919 + 1;
      const random = (n: number) => {
        x = (x * 1103515245 + 12345) % 2 ** 31;
        return x % n;
      };
      while (Date.now() - started < DURATION_MS) {
        const live = cluster.nodes.filter((n) => !(killed && n === n3));
        const node = live[random(live.length)]!;
        const userId = users[random(USERS)]!;
        const roll = random(10);
        const start = Date.now();
        let answer: HttpResult<TeamAnswer>;
        let what: string;
        try {
          if (roll < 6) {
            what = `join ${TEAMS[random(TEAMS.length)]}`;
            answer = await join(node, userId, what.slice(5));
          } else if (roll < 9) {
            what = 'leave';
            answer = await leave(node, userId);
          } else {
            what = 'get';
            answer = await teamOf(node, userId);
          }
        } catch {
          counts.failed++; // connection refused/reset (the killed node): may or may not have happened
          continue;
        }
        const end = Date.now();
        if (answer.status === 200 || answer.status === 409) {
          acked.push({ userId, teamId: answer.body.teamId, start, end, what });
          if (answer.status === 200) counts.ok++;
          else counts.conflict++;
        } else if (answer.status === 503) {
          counts.unavailable++; // certainly not applied
        } else if (answer.status === 504) {
          counts.unknown++; // sent to the killed node: may or may not have happened
        } else {
          throw new Error(`unexpected ${answer.status} ${JSON.stringify(answer.body)} for ${what} ${userId}`);
        }
      }
    };

    const chaos = (async () => {
      await sleep(4000);
      killed = true;
      await n3.kill();
      await sleep(3000);
      await n3.restart();
      killed = false;
    })();
    await Promise.all([...Array.from({ length: CLIENTS }, (_, i) => client(i + 1)), chaos]);
    const stressEnd = Date.now();
    expect(counts.ok).toBeGreaterThan(500); // the load really ran (on a 2-core machine, thousands)

    // Replay every user's stream from the store: the invariant at every version.
    const truth = new Map<string, { teamId: string | null; at: number }[]>();
    let appended = 0;
    for (const userId of users) {
      const stream = await events.read(`${USER_STREAM}${userId}`);
      appended += stream.length;
      truth.set(userId, replay(userId, stream));
    }

    // Every acknowledged answer is explained by the log: while the request was in flight, the
    // stream had the user on the team the answer names (the store's clock and ours are the same
    // machine's; 20 ms of slack for clock reads on either side).
    const SLACK = 20;
    const unexplained: Acked[] = [];
    for (const op of acked) {
      const states = truth.get(op.userId)!;
      const explained = states.some(
        (s, i) =>
          s.teamId === op.teamId &&
          s.at <= op.end + SLACK &&
          (i + 1 >= states.length || states[i + 1]!.at >= op.start - SLACK),
      );
      if (!explained) unexplained.push(op);
    }
    expect(unexplained).toEqual([]);

    // The team projection of every node (n3's rebuilt after its restart) converges to the streams.
    const expected = new Map(TEAMS.map((t) => [t, [] as string[]]));
    for (const [userId, states] of truth) {
      const final = states.at(-1)!.teamId;
      if (final !== null) expected.get(final)!.push(userId);
    }
    for (const list of expected.values()) list.sort();
    await cluster.eventually(
      async () => {
        for (const node of cluster.nodes) {
          for (const team of TEAMS) {
            const { body } = await members(node, team);
            expect(body.members).toEqual(expected.get(team));
          }
        }
      },
      { timeout: 15_000, interval: 20 },
    );
    const converged = Date.now() - stressEnd;

    // Each entity answers what its stream says.
    await cluster.waitReady();
    for (const userId of users) {
      const states = truth.get(userId)!;
      const final = states.at(-1)!.teamId;
      expect((await teamOf(cluster.nodes[users.indexOf(userId) % 3]!, userId)).body.teamId).toBe(final);
    }

    console.log(
      `[${backend}] stress: ${acked.length} acknowledged (${counts.ok} 200, ${counts.conflict} 409), ` +
        `${counts.unavailable} 503, ${counts.unknown} 504, ${counts.failed} connection failures; ${appended} events in ${USERS} streams; ` +
        `the team views of all 3 nodes matched the streams ${converged} ms after the load ended (incl. replaying the streams)`,
    );
  });

  it('the team view trails an acknowledged join by about one poll', async () => {
    const lags: number[] = [];
    for (let i = 0; i < 20; i++) {
      const userId = `lag-${i}`;
      const team = `lag-team-${i}`;
      expect((await join(cluster.nodes[i % 3]!, userId, team)).status).toBe(200);
      const acked = performance.now();
      const reader = cluster.nodes[(i + 1) % 3]!;
      for (;;) {
        if ((await members(reader, team)).body.members.includes(userId)) break;
        await sleep(2);
      }
      lags.push(performance.now() - acked);
    }
    lags.sort((a, b) => a - b);
    const median = lags[10]!;
    const max = lags.at(-1)!;
    console.log(
      `[${backend}] projection lag after a 200 (other node): median ${median.toFixed(0)} ms, max ${max.toFixed(0)} ms`,
    );
    expect(max).toBeLessThan(2000);
  });
});

describe('the team-joiner app under --ownership none', () => {
  it('answers every teams route with 501 and a JSON error', async () => {
    const cluster = await LocalCluster.start({ nodes: 1, args: ['--ownership', 'none'] });
    try {
      const node = cluster.nodes[0]!;
      for (const [method, path, body] of [
        ['PUT', '/users/u/team', { teamId: 'red' }],
        ['DELETE', '/users/u/team', undefined],
        ['GET', '/users/u/team', undefined],
        ['GET', '/teams/red', undefined],
      ] as const) {
        const answer = await node.request<{ error: string }>(method, path, { body });
        expect({ path, status: answer.status }).toEqual({ path, status: 501 });
        expect(typeof answer.body.error).toBe('string');
      }
    } finally {
      await cluster.stop();
    }
  });
});
