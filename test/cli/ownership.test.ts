/**
 * `--ownership none`, the naive scaled-out service: every node keeps its own in-memory
 * copy, so two nodes disagree about the same entity. Under the default (single owner)
 * they agree. The classic split-entity walk-through, both ways.
 */
import { describe, expect, it } from 'vitest';
import { tempSqliteUrl } from '../support/tmp.js';
import { type CliNode, request, startCliCluster, stopAll } from './harness.js';

async function walkThrough(n1: CliNode, n2: CliNode): Promise<{ onNode2: unknown; onNode1: unknown }> {
  expect((await request(n1, 'PUT', '/entities/entity_1', { json: { state: 'working' } })).status).toBe(200);
  const onNode2 = (await request(n2, 'GET', '/entities/entity_1')).body;
  expect((await request(n2, 'PUT', '/entities/entity_1', { json: { state: 'finalized' } })).status).toBe(200);
  const onNode1 = (await request(n1, 'GET', '/entities/entity_1')).body;
  return { onNode2, onNode1 };
}

describe('--ownership none (the uncoordinated baseline) against the default', () => {
  it('under none the two nodes diverge: a change on node 1 is not seen on node 2', async () => {
    // No store and no secret needed: nothing is shared.
    const nodes = await startCliCluster({ nodes: 2, args: ['--ownership', 'none'], secret: null });
    const [n1, n2] = nodes as [CliNode, CliNode];
    const { onNode2, onNode1 } = await walkThrough(n1, n2);
    expect(onNode2).toEqual({ id: 'entity_1', state: 'initialized', version: 0 });
    expect(onNode1).toEqual({ id: 'entity_1', state: 'working', version: 1 });
    const cluster = await request<{ ownership: string; members: unknown[] }>(n1, 'GET', '/cluster');
    expect(cluster.body.ownership).toBe('none');
    expect(cluster.body.members).toHaveLength(1);
    expect(await stopAll(nodes)).toEqual([0, 0]);
  });

  it('under the default the two nodes agree', async () => {
    const nodes = await startCliCluster({ nodes: 2, store: tempSqliteUrl() });
    const [n1, n2] = nodes as [CliNode, CliNode];
    const { onNode2, onNode1 } = await walkThrough(n1, n2);
    expect(onNode2).toEqual({ id: 'entity_1', state: 'working', version: 1 });
    expect(onNode1).toEqual({ id: 'entity_1', state: 'finalized', version: 2 });
    expect((await request<{ ownership: string }>(n1, 'GET', '/cluster')).body.ownership).toBe('single');
    expect(await stopAll(nodes)).toEqual([0, 0]);
  });
});
