/**
 * Graceful stops seen from outside, through `concord node` processes (LocalCluster) and HTTP
 * clients that keep their connections alive, as any load balancer does:
 *
 * - a rolling restart of all three nodes, one after another, under load on every node from many
 *   connections, fails no call (on both stores);
 * - SIGTERM shortly after a SIGSTOP/SIGCONT, with keep-alive clients on every node, stops every
 *   node within a bound, and a stopping node claims nothing (it used to hang in the HTTP server's
 *   close and collect the shards of its leaving peers until the 20 s hard exit).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { failedCalls, LocalCluster, startBalancedLoad, startLoad } from '../../src/testing/index.js';
import { type Backend, backends, freshStoreUrl } from '../support/cluster.js';

let cluster: LocalCluster | null = null;

afterEach(async () => {
  await cluster?.destroy();
  cluster = null;
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const ids = Array.from({ length: 400 }, (_, i) => `roll-${i}`);

describe.each(backends)('rolling restart under load (%s)', (backend: Backend) => {
  it('restarts every node in turn (SIGTERM, start, ready) with 0 failed calls', async () => {
    cluster = await LocalCluster.start({ nodes: 3, store: await freshStoreUrl(backend) });
    const load = startBalancedLoad({ nodes: cluster.nodes, ids, callers: 48 });
    await sleep(500);
    const restarts: number[] = [];
    for (const node of cluster.nodes) {
      const started = performance.now();
      await node.restart(30_000, { graceful: true });
      restarts.push(Math.round(performance.now() - started));
      await sleep(500);
    }
    const calls = await load.stop();
    const failed = failedCalls(calls);
    const longest = Math.max(...calls.map((c) => c.endedAt - c.startedAt));
    const retried = calls.filter((c) => c.attempts > 1).length;
    console.log(
      `[${backend}] rolling restart: ${calls.length} calls, ${failed.length} failed, ${retried} retried after a 503 or a refused connection, ` +
        `longest call ${longest.toFixed(0)} ms; restarts took ${restarts.join(', ')} ms`,
    );
    expect(failed.slice(0, 5)).toEqual([]);
    expect(calls.length).toBeGreaterThan(1000);
    // Every node served its share again at the end.
    for (const node of cluster.nodes) expect((await node.get('/readyz')).status).toBe(200);
  });
});

describe('SIGTERM after a pause, with keep-alive clients on every node (sqlite)', () => {
  it('every node stops within a bound, and a stopping node claims nothing', async () => {
    cluster = await LocalCluster.start({ nodes: 3, env: { CONCORD_LOG_LEVEL: 'info' } });
    // Plain keep-alive clients pinned to each node: they keep sending to a stopping node.
    const load = startLoad({ nodes: cluster.nodes, ids, workers: 8, pauseMs: 2 });
    await sleep(1000);
    const paused = cluster.node('n2');
    await paused.pause();
    await sleep(5000);
    paused.resume();
    await sleep(300);
    const results = await Promise.all(
      cluster.nodes.map(async (node, i) => {
        await sleep(i * 700); // all within 3 s
        const started = performance.now();
        const code = await node.stop(25_000);
        return { node, code, ms: performance.now() - started };
      }),
    );
    await load.stop();
    for (const { node, code, ms } of results) {
      const logs = node.logs(1_000_000);
      const stopAt = logs.indexOf('"msg":"stopping"');
      expect(stopAt, `${node.name} logged no stop:\n${logs.slice(-3000)}`).toBeGreaterThan(-1);
      console.log(`${node.name}: exit ${code} ${ms.toFixed(0)} ms after SIGTERM`);
      expect(code).toBe(0);
      expect(ms).toBeLessThan(8000);
      // Claims sent before the stop may still come back (logged differently); none is sent after.
      expect(logs.slice(stopAt)).not.toContain('"msg":"claimed shards"');
      expect(logs.slice(stopAt)).toContain('"msg":"left the cluster"');
    }
  });
});
