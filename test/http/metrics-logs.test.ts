/**
 * What an operator alerts on, from outside: the metric names of `GET /metrics` (no doubled
 * prefix), failover and handoff counters after a kill -9 and a graceful leave, structured logs
 * that carry the node name at the chosen `--log-level`, and a library node that is quiet unless
 * it is given a logger.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, LocalCluster } from '../../src/testing/index.js';
import { REPO } from '../cli/harness.js';
import { tempDir } from '../support/tmp.js';

let cluster: LocalCluster;

beforeAll(async () => {
  cluster = await LocalCluster.start({ nodes: 3, env: { CONCORD_LOG_LEVEL: 'info' } });
});

afterAll(async () => {
  await cluster.stop();
});

function seriesNames(text: string): Set<string> {
  return new Set(
    text
      .split('\n')
      .filter((line) => line !== '' && !line.startsWith('#'))
      .map((line) => line.split(/[{ ]/)[0]!),
  );
}

describe('metrics and logs', () => {
  it('serves the process metrics once prefixed, and what an operator alerts on', async () => {
    const [n1, n2] = cluster.nodes;
    for (let i = 0; i < 40; i++) expect((await n1!.put(`/entities/m-${i}`, { state: 'working' })).status).toBe(200);
    const text = String((await n1!.get('/metrics')).body);
    expect(String((await n2!.get('/metrics')).body)).not.toContain('concord_process_process_');
    expect(text).not.toContain('concord_process_process_');
    expect(text).not.toContain('concord_process_nodejs_');
    const names = seriesNames(text);
    for (const name of [
      'concord_process_cpu_seconds_total',
      'concord_nodejs_eventloop_lag_p99_seconds',
      'concord_calls_total',
      'concord_call_duration_seconds_bucket',
      'concord_active_entities',
      'concord_shards_held',
      'concord_shards_owned',
      'concord_lease_renewal_duration_seconds_bucket',
      'concord_lease_renewal_failures_total',
      'concord_fence_rejections_total',
      'concord_handoffs_total',
      'concord_handoff_duration_seconds_bucket',
      'concord_failovers_total',
      'concord_failover_duration_seconds_bucket',
      'concord_transport_frames_total',
      'concord_transport_bytes_total',
      'concord_replicated_map_entries',
      'concord_replicated_map_sync_lag_seconds',
      'concord_store_query_duration_seconds_bucket',
      'concord_evictions_total',
      'concord_suspicions_raised_total',
    ]) {
      expect(names, name).toContain(name);
    }
    // Calls by kind and outcome; traffic per peer; the accounts app's replicated map.
    expect(await n1!.metric('concord_calls_total', { kind: 'entity-state', outcome: 'ok' })).toBeGreaterThanOrEqual(40);
    expect(await n1!.metric('concord_transport_frames_total', { peer: 'n2', direction: 'out' })).toBeGreaterThan(0);
    expect(await n1!.metric('concord_store_query_duration_seconds_count', { op: 'renewLease' })).toBeGreaterThan(0);
    expect(text).toMatch(/concord_replicated_map_entries\{map="[^"]+"/);
  });

  it("names the SQLite file's shared writer: one node process commits, the others forward to it", async () => {
    const nodes = cluster.nodes;
    for (let i = 0; i < 60; i++) {
      expect((await nodes[i % nodes.length]!.put(`/entities/w-${i}`, { state: 'working' })).status).toBe(200);
    }
    const seen = await Promise.all(
      nodes.map(async (node) => ({
        writer: await node.metric('concord_sqlite_writer_role', { role: 'writer' }),
        follower: await node.metric('concord_sqlite_writer_role', { role: 'follower' }),
        commits: await node.metric('concord_sqlite_writer_commits_total'),
        forwarded: await node.metric('concord_sqlite_writer_forwarded_batches_total'),
        reruns: await node.metric('concord_sqlite_writer_reruns_total'),
      })),
    );
    const writers = seen.filter((s) => s.writer === 1 && s.follower === 0);
    const followers = seen.filter((s) => s.writer === 0 && s.follower === 1);
    expect(writers, JSON.stringify(seen)).toHaveLength(1);
    expect(followers, JSON.stringify(seen)).toHaveLength(2);
    // Every node owns some of the 60 entities: the writer committed, each follower forwarded.
    expect(writers[0]!.commits).toBeGreaterThan(0);
    for (const follower of followers) expect(follower.forwarded, JSON.stringify(seen)).toBeGreaterThan(0);
    for (const s of seen) expect(s.reruns).toBe(0);
    // Each node's log says which role it has (its last word on it).
    nodes.forEach((node, i) => {
      const said = node
        .logs(Number.POSITIVE_INFINITY)
        .split('\n')
        .filter((line) => line.includes('"sharedWriter"'))
        .map((line) => (JSON.parse(line) as { sharedWriter: string }).sharedWriter);
      expect(said.at(-1), node.name).toBe(seen[i]!.writer === 1 ? 'writer' : 'follower');
    });
  });

  it('counts failovers after a kill -9 and handoffs after a graceful leave', async () => {
    const [n1, n2, n3] = cluster.nodes as [
      (typeof cluster.nodes)[0],
      (typeof cluster.nodes)[0],
      (typeof cluster.nodes)[0],
    ];
    await n3.kill();
    await eventually(
      async () => {
        const taken = (await n1.metric('concord_failovers_total')) + (await n2.metric('concord_failovers_total'));
        expect(taken).toBeGreaterThan(0);
      },
      { timeout: 10_000 },
    );
    expect(
      (await n1.metric('concord_failover_duration_seconds_count')) +
        (await n2.metric('concord_failover_duration_seconds_count')),
    ).toBeGreaterThan(0);
    await n3.restart();
    await eventually(async () => expect(await n3.metric('concord_shards_held')).toBeGreaterThan(0), {
      timeout: 10_000,
    });
    const before = (await n1.metric('concord_failovers_total')) + (await n2.metric('concord_failovers_total'));
    expect(await n3.stop()).toBe(0);
    // n3 handed its shards over on its way out (its last words are in its logs).
    expect(n3.logs(100_000)).toMatch(/"handedOver":[1-9]/);
    const after = (await n1.metric('concord_failovers_total')) + (await n2.metric('concord_failovers_total'));
    expect(after).toBe(before);
  });

  it('every log line is JSON with the node name; --log-level filters', async () => {
    const lines = cluster.nodes[0]!.logs(100_000)
      .split('\n')
      .filter((line) => line.startsWith('{'));
    expect(lines.length).toBeGreaterThan(3);
    for (const line of lines) expect(JSON.parse(line)).toMatchObject({ node: 'n1' });
    const quiet = await cluster.addNode('n9', { args: ['--log-level', 'error'] });
    quiet.launch();
    await quiet.waitReady();
    expect(await quiet.stop()).toBe(0);
    expect(
      quiet
        .logs()
        .split('\n')
        .filter((line) => line.startsWith('{')),
    ).toEqual([]);
  });

  it('a library node logs nothing unless it is given a logger (or CONCORD_LOG_LEVEL is set)', () => {
    const script = `
      import { startNode, createLogger } from ${JSON.stringify(join(REPO, 'dist/src/index.js'))};
      const store = 'sqlite:' + ${JSON.stringify(join(tempDir('lib-'), 'c.db'))};
      const secret = 'a-library-secret-of-some-length';
      const quiet = await startNode({ name: 'lib1', store, secret, entities: [] });
      await quiet.stop();
      const loud = await startNode({ name: 'lib2', store, secret, entities: [], logger: createLogger({}, 'info') });
      await loud.stop();
    `;
    const env = { ...process.env };
    delete env['CONCORD_LOG_LEVEL'];
    const file = join(tempDir('lib-'), 'library-node.mjs');
    writeFileSync(file, script);
    const run = spawnSync(process.execPath, [file], { env, encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    const lines = run.stderr.split('\n').filter((line) => line.startsWith('{'));
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.every((line) => JSON.parse(line).node === 'lib2')).toBe(true);
  });
});
