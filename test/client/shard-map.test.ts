/** The client's shard map and error mapping, on their own (no cluster). */
import { describe, expect, it } from 'vitest';
import { errorFromAnswer } from '../../src/client/errors.js';
import { type ClusterAnswer, ShardMap } from '../../src/client/shard-map.js';
import { shardOf } from '../../src/cluster/hash.js';
import { DomainError, IdempotencyKeyReused, Timeout, Unavailable } from '../../src/errors.js';

const view = (self: string, map: (string | null)[], epochs: number[]): ClusterAnswer => ({
  self,
  members: [
    { name: 'a', httpAddress: 'http://a:1', status: 'alive' },
    { name: 'b', httpAddress: 'http://b:1', status: 'alive' },
    { name: 'c', httpAddress: null, status: 'dead' },
  ],
  shards: { map, epochs },
});

describe('ShardMap', () => {
  it('hashes entities to shards exactly as the nodes do', () => {
    const map = new ShardMap();
    map.learn(view('a', new Array(64).fill('a'), new Array(64).fill(1)), 'http://a:1/');
    for (const id of ['x', 'y', 'order-17', 'é']) expect(map.shardOf('k', id)).toBe(shardOf('k', id, 64));
    expect(map.ownerOf('k', 'x')).toEqual({ shard: shardOf('k', 'x', 64), owner: 'a', url: 'http://a:1' });
  });

  it('folds several views: the newest epoch wins, a lagging null does not erase an owner', () => {
    const map = new ShardMap();
    map.learn(view('a', ['a', 'b', null, 'a'], [3, 2, 0, 5]), 'http://a:1');
    map.learn(view('b', [null, 'b', 'b', 'b'], [0, 2, 4, 4]), 'http://b:1');
    const owners = [0, 1, 2, 3].map((shard) => (map as unknown as { owners: (string | null)[] }).owners[shard]);
    expect(owners).toEqual(['a', 'b', 'b', 'a']);
  });

  it('takes MOVED hints of newer epochs only, and owner hints only for nodes it can reach', () => {
    const map = new ShardMap();
    map.learn(view('a', ['a', 'a'], [5, 5]), 'http://a:1');
    map.applyMoved(0, 'b', 4, 'http://b:1');
    expect((map as unknown as { owners: string[] }).owners[0]).toBe('a');
    map.applyMoved(0, 'b', 6, 'http://b:1');
    expect((map as unknown as { owners: string[] }).owners[0]).toBe('b');
    const id = ['p', 'q', 'r', 's', 't'].find((candidate) => map.shardOf('k', candidate) === 1)!;
    map.applyOwnerHint('k', id, 'c'); // c's URL is unknown (dead, no address): ignored
    expect(map.ownerOf('k', id)?.owner).toBe('a');
    map.applyOwnerHint('k', id, 'b');
    expect(map.ownerOf('k', id)?.owner).toBe('b');
  });
});

describe('errorFromAnswer', () => {
  it('gives the concord error classes with their fields', () => {
    const unavailable = errorFromAnswer(503, { error: 'down', code: 'UNAVAILABLE', maybeApplied: false }, 'n1');
    expect(unavailable).toBeInstanceOf(Unavailable);
    expect(unavailable.details?.['maybeApplied']).toBe(false);
    const timeout = errorFromAnswer(504, { error: 'late', code: 'TIMEOUT', maybeApplied: true }, 'n1');
    expect(timeout).toBeInstanceOf(Timeout);
    expect(timeout.details?.['maybeApplied']).toBe(true);
    expect(errorFromAnswer(422, { error: 'reused', code: 'IDEMPOTENCY_KEY_REUSED' }, 'n1')).toBeInstanceOf(
      IdempotencyKeyReused,
    );
    const domain = errorFromAnswer(
      409,
      { error: 'no', code: 'DOMAIN_ERROR', details: { code: 'FULL', seats: 0 } },
      'n1',
    );
    expect(domain).toBeInstanceOf(DomainError);
    expect((domain as DomainError).error).toEqual({ code: 'FULL', seats: 0 });
    expect(errorFromAnswer(400, { error: 'bad' }, 'n1').code).toBe('BAD_MESSAGE');
    expect(errorFromAnswer(502, null, 'n1').code).toBe('HANDLER_ERROR');
  });
});
