import { StoreUnavailable } from '../errors.js';
import type { Store } from '../store/types.js';
import type { FaultSwitch } from '../transport/faults.js';

/**
 * Test-only: a store that fails every call while the fault switch has the store cut,
 * as if the database were unreachable from this node. Created only when fault injection
 * is enabled.
 */
export function withStoreFaults(store: Store, faults: FaultSwitch): Store {
  const guard = <T>(call: () => Promise<T>): Promise<T> =>
    faults.storeCut ? Promise.reject(new StoreUnavailable('store unreachable (fault injection)')) : call();
  return {
    backend: store.backend,
    commitsInFlight: store.commitsInFlight,
    activationsInFlight: store.activationsInFlight,
    // The worker's own counters: answered even while the store is cut.
    sharedWriterStatus: async () => (await store.sharedWriterStatus?.()) ?? null,
    migrate: () => guard(() => store.migrate()),
    close: () => store.close(),
    now: () => guard(() => store.now()),
    registerNode: (req) => guard(() => store.registerNode(req)),
    renewLease: (name, inc, ttl) => guard(() => store.renewLease(name, inc, ttl)),
    setNodeStatus: (name, inc, status, from) => guard(() => store.setNodeStatus(name, inc, status, from)),
    reportSuspicions: (reporter, inc, suspects) => guard(() => store.reportSuspicions(reporter, inc, suspects)),
    evictMember: (request) => guard(() => store.evictMember(request)),
    acknowledgeEviction: (name, inc) => guard(() => store.acknowledgeEviction(name, inc)),
    removeNode: (name, inc) => guard(() => store.removeNode(name, inc)),
    listNodes: () => guard(() => store.listNodes()),
    pruneNodes: (grace) => guard(() => store.pruneNodes(grace)),
    initShards: (count) => guard(() => store.initShards(count)),
    listShards: () => guard(() => store.listShards()),
    claimShard: (shard, epoch, owner, inc) => guard(() => store.claimShard(shard, epoch, owner, inc)),
    releaseShard: (shard, epoch, owner, inc) => guard(() => store.releaseShard(shard, epoch, owner, inc)),
    activate: (requests) => guard(() => store.activate(requests)),
    write: (requests) => guard(() => store.write(requests)),
    readEntity: (kind, id) => guard(() => store.readEntity(kind, id)),
    readIdempotencyKeys: (kind, id, notBefore, limit) =>
      guard(() => store.readIdempotencyKeys(kind, id, notBefore, limit)),
    readIdempotencyKey: (kind, id, key) => guard(() => store.readIdempotencyKey(kind, id, key)),
    pruneIdempotencyKeys: (windowMs, limit) => guard(() => store.pruneIdempotencyKeys(windowMs, limit)),
    appendEvents: (request) => guard(() => store.appendEvents(request)),
    readEvents: (stream, from, limit) => guard(() => store.readEvents(stream, from, limit)),
    streamVersion: (stream) => guard(() => store.streamVersion(stream)),
    readEventLog: (cursor, limit, prefix) => guard(() => store.readEventLog(cursor, limit, prefix)),
    readMeta: (key) => guard(() => store.readMeta(key)),
    insertMetaIfAbsent: (key, value) => guard(() => store.insertMetaIfAbsent(key, value)),
    compareAndSetMeta: (key, expected, next) => guard(() => store.compareAndSetMeta(key, expected, next)),
  };
}
