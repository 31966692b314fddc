import { EntityState } from '../examples/entity-state/entity.js';
import { createClient } from '../src/client/client.js';
import type { HttpLoadOptions } from './http-load.js';
import { closedLoop } from './load-loop.js';
import type { LoadResult } from './protocol.js';
import { STATES } from './states.js';

/**
 * The `concord+client` driver: a closed loop of `concurrency` callers in the bench process, each
 * calling through `concord-cluster/client` (one call in flight per caller, as autocannon keeps
 * one request in flight per connection, and no more connections per node than autocannon
 * opens), so each call goes straight to the entity's owner. The
 * same entity, ids, write ratio and states as the HTTP driver; a fresh client per row, its map
 * learnt and its connections opened during the warm-up.
 */

/** The same knobs as the HTTP driver's. */
export type ClientLoadOptions = HttpLoadOptions;

export async function clientLoad(options: ClientLoadOptions): Promise<LoadResult> {
  const client = createClient({
    nodes: options.urls,
    entities: [EntityState],
    deadlineMs: 30_000,
    // As many connections as autocannon opens to each node (C spread over the nodes), so both
    // drivers hold the same number of connections; a call waits for one when its node's are busy.
    connectionsPerNode: Math.max(1, Math.ceil(options.concurrency / options.urls.length)),
  });
  const keyPrefix = `c${Date.now().toString(36)}-`;
  try {
    await client.refresh();
    const result = await closedLoop((id, write, n) => {
      if (!write) return client.callByName(EntityState.kind, id, 'get', undefined);
      const message = { state: STATES[n % STATES.length] };
      const keyed = options.idempotencyKeys ? { idempotencyKey: `${keyPrefix}${n}` } : undefined;
      return client.callByName(EntityState.kind, id, 'set', message, keyed);
    }, options);
    return { ...result, client: { ...client.stats } };
  } finally {
    await client.close();
  }
}
