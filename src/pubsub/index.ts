/**
 * pubsub — topics and replicated maps over the peer transport.
 *
 * - `PubSub` (pubsub.ts): `subscribe(topic, handler)` / `publish(topic, message)` to every
 *   reachable node with subscribers, FIFO per sender; nodes exchange their topic interest on
 *   connect and on change, so a message only travels to nodes that want it. At most once:
 *   nothing is replayed after a partition.
 * - `ReplicatedMap` (replicated-map.ts): a named map held whole on every node, reads local,
 *   writes last-writer-wins by hybrid logical clock (hlc.ts) + origin, deletes as tombstones
 *   (collected once every member holds them). Writes are broadcast over pub/sub; digests
 *   (digest.ts) compared by anti-entropy (anti-entropy.ts) on (re)connect and periodically
 *   repair whatever a broadcast missed.
 *
 * Nothing here is needed for the safety of entities: the store stays the authority, and these
 * are caches that converge.
 */
export type { SyncOutcome } from './anti-entropy.js';
export type { PeerHost } from './host.js';
export { ReplicatedMaps } from './maps.js';
export { PubSub, type PubSubEvents, type PubSubStats, type Subscriber } from './pubsub.js';
export {
  type ChangeListener,
  type MapChange,
  ReplicatedMap,
  type ReplicatedMapOptions,
  type ReplicatedMapStats,
} from './replicated-map.js';
