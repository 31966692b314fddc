import { describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/open.js';
import {
  backends,
  freshStoreUrl,
  nodeConfig,
  type ProcessNode,
  sleep,
  startCluster,
  startNode,
  status,
  waitForStableOwnership,
} from '../support/cluster.js';

interface LoadReport {
  calls: number;
  failures: string[];
  maxLatencyMs: number;
}

/** Closed-loop callers through the given nodes until stopped; records failures and the longest call. */
function runLoad(nodes: ProcessNode[], callers: number) {
  const report: LoadReport = { calls: 0, failures: [], maxLatencyMs: 0 };
  let running = true;
  const loops = Array.from({ length: callers }, async (_, c) => {
    const node = nodes[c % nodes.length]!;
    for (let i = 0; running; i++) {
      const id = `load-${(c * 7919 + i * 104729) % 300}`;
      const started = performance.now();
      try {
        if (i % 3 === 0) await node.call('register', id, 'set', `c${c}-${i}`, 10_000);
        else await node.call('register', id, 'get', undefined, 10_000);
        report.calls++;
      } catch (error) {
        report.failures.push(`${node.name} ${id}: ${String(error)}`);
      }
      report.maxLatencyMs = Math.max(report.maxLatencyMs, performance.now() - started);
    }
  });
  return {
    report,
    stop: async () => {
      running = false;
      await Promise.all(loops);
      return report;
    },
  };
}

describe.each(backends)('join and leave under load (%s)', (backend) => {
  it('a joining node takes about a third of the shards and a leaving one hands them over, with no failed call', async () => {
    const store = await freshStoreUrl(backend);
    const options = { store, nodes: 2 };
    const [n1, n2] = await startCluster(options);
    const load = runLoad([n1!, n2!], 12);
    await sleep(500);

    const joinStarted = load.report.calls;
    const n3 = await startNode(nodeConfig(options, 'n3'));
    await waitForStableOwnership([n1!, n2!, n3], 256);
    const held3 = (await status(n3)).shards.held.length;
    // Rendezvous hashing: about 256/3 shards move to the new node, and only those.
    expect(held3).toBeGreaterThan(50);
    expect(held3).toBeLessThan(125);
    await sleep(500);
    const joinPause = load.report.maxLatencyMs;
    console.log(
      `[${backend}] join: n3 took ${held3} shards; ${load.report.calls - joinStarted} calls meanwhile; longest call ${joinPause.toFixed(0)} ms`,
    );

    // Graceful leave: SIGTERM hands every shard over before the process exits.
    const leaveStarted = performance.now();
    expect(await n3.stop()).toBe(0);
    const leaveMs = performance.now() - leaveStarted;
    const direct = await openStore(store);
    try {
      const rows = await direct.listShards();
      expect(rows.filter((r) => r.owner === 'n3')).toEqual([]);
    } finally {
      await direct.close();
    }
    await waitForStableOwnership([n1!, n2!], 256, 1000);
    await sleep(300);
    const report = await load.stop();
    console.log(
      `[${backend}] leave took ${leaveMs.toFixed(0)} ms; ${report.calls} calls in all, longest ${report.maxLatencyMs.toFixed(0)} ms`,
    );
    expect(report.failures).toEqual([]);
    expect(report.calls).toBeGreaterThan(100);
  });
});
