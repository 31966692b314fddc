import { rendezvousOwner } from '../cluster/hash.js';

/**
 * How far ownership is from the rendezvous placement over `names`: the number of (node, shard)
 * pairs where node `names[i]` holds a shard it is not the owner of, or does not hold one it is.
 * `held[i]` is what `names[i]` reports holding. 0 means settled: every shard held by exactly its
 * owner. The harness, the test support and the bench all wait for this.
 */
export function misplacedShards(
  names: readonly string[],
  held: readonly ReadonlySet<number>[],
  shardCount: number,
): number {
  let misplaced = 0;
  for (let shard = 0; shard < shardCount; shard++) {
    const owner = rendezvousOwner(shard, names);
    names.forEach((name, i) => {
      if (held[i]!.has(shard) !== (name === owner)) misplaced++;
    });
  }
  return misplaced;
}
