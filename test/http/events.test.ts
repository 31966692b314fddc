/**
 * `GET /events` (Server-Sent Events), `GET /cluster/owner/:kind/:id` and the `Concord-Owner`
 * header against real `concord node` processes: the stream starts with the state, reports a
 * kill -9 as a dead member and a failover of its shards, and the dead member leaves the view
 * within seconds. A plain `concord node` has no demo buttons.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shardOf } from '../../src/cluster/hash.js';
import { eventually, LocalCluster } from '../../src/testing/index.js';

let cluster: LocalCluster;

beforeAll(async () => {
  cluster = await LocalCluster.start({ nodes: 3 });
});

afterAll(async () => {
  await cluster.stop();
});

interface SseEvent {
  event: string;
  data: Record<string, unknown>;
}

/** Read a node's event stream into `events` until `stop` is aborted. */
function readEvents(url: string, events: SseEvent[], stop: AbortController): Promise<void> {
  return (async () => {
    const response = await fetch(`${url}/events`, { signal: stop.signal });
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end = buffer.indexOf('\n\n');
      while (end >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event && data) events.push({ event, data: JSON.parse(data) });
        end = buffer.indexOf('\n\n');
      }
    }
  })().catch((error: unknown) => {
    if (!stop.signal.aborted) throw error;
  });
}

describe('the dashboard feed and entity owners', () => {
  it('names the owner of an entity in /cluster/owner and in Concord-Owner', async () => {
    const [n1, n2] = cluster.nodes;
    const put = await n2!.put('/entities/owned-1', { state: 'working' });
    expect(put.status).toBe(200);
    const owner = put.headers.get('concord-owner');
    expect(['n1', 'n2', 'n3']).toContain(owner);
    const answer = await n1!.get('/cluster/owner/entity-state/owned-1');
    expect(answer.status).toBe(200);
    expect(answer.body).toEqual({
      kind: 'entity-state',
      id: 'owned-1',
      shard: shardOf('entity-state', 'owned-1', 256),
      owner,
      epoch: expect.any(Number),
    });
    expect((await n1!.get('/entities/owned-1')).headers.get('concord-owner')).toBe(owner);
    expect((await n1!.get('/cluster/owner/nope/owned-1')).status).toBe(404);
    // No demo controls on a plain node.
    expect((await n1!.post('/demo/kill/n3', {})).status).toBe(404);
  });

  it('streams the state, then a dead member and the failover of its shards; the dead member is pruned', async () => {
    const [n1, , n3] = cluster.nodes;
    const events: SseEvent[] = [];
    const stop = new AbortController();
    const reading = readEvents(n1!.url, events, stop);
    try {
      await eventually(() => expect(events.some((e) => e.event === 'hello')).toBe(true));
      const hello = events.find((e) => e.event === 'hello')!.data as {
        state: { members: { name: string; status: string }[]; shards: { owners: string[]; epochs: number[] } };
      };
      expect(hello.state.members.map((m) => m.status)).toEqual(['alive', 'alive', 'alive']);
      expect(hello.state.shards.epochs).toHaveLength(256);
      // The map as n1 last read it: every shard owned once its periodic read has seen all claims.
      await eventually(() => {
        const state = events.filter((e) => e.event === 'state').at(-1)?.data as
          | { shards: { owners: (string | null)[] } }
          | undefined;
        expect(state?.shards.owners.filter((o) => o !== null)).toHaveLength(256);
      });

      await n3!.kill();
      const activity = () => events.filter((e) => e.event === 'activity').map((e) => e.data);
      await eventually(
        () => {
          expect(activity().some((a) => a['kind'] === 'dead' && String(a['text']).startsWith('n3 is dead'))).toBe(true);
          const failover = activity().find((a) => a['kind'] === 'failover');
          expect(failover).toMatchObject({ from: 'n3' });
          expect(Number(failover!['shards'])).toBeGreaterThan(0);
        },
        { timeout: 10_000 },
      );
      const last = events.filter((e) => e.event === 'state').at(-1)!.data as { shards: { owners: string[] } };
      expect(new Set(last.shards.owners)).toEqual(new Set(['n1', 'n2']));
      // A dead member is shown for a few seconds, then left out.
      await eventually(
        async () => {
          const view = await n1!.get<{ members: { name: string }[] }>('/cluster');
          expect(view.body.members.map((m) => m.name)).toEqual(['n1', 'n2']);
        },
        { timeout: 10_000 },
      );
    } finally {
      stop.abort();
      await reading;
    }
  });
});
