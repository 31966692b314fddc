import { ConcordError } from '../errors.js';
import { SYNC_PUSH, SYNC_REQUEST } from './anti-entropy.js';
import { HybridClock } from './hlc.js';
import type { PeerHost, PubSubLogger } from './host.js';
import type { PubSub } from './pubsub.js';
import { type MapEndpoint, ReplicatedMap, type ReplicatedMapOptions } from './replicated-map.js';

const NAME_PATTERN = /^[A-Za-z0-9_.:/-]{1,128}$/;

/**
 * The replicated maps of one node: opens them by name, owns the node's hybrid logical clock
 * (one per node, shared by every map), and routes the anti-entropy traffic of all maps
 * (`rm.sync` requests, `rm.push` messages, tagged with the map name) to the right one.
 */
export class ReplicatedMaps {
  private readonly clock = new HybridClock();
  private readonly maps = new Map<string, ReplicatedMap<string, unknown>>();
  private readonly endpoints = new Map<string, MapEndpoint>();
  private closed = false;

  constructor(
    private readonly host: PeerHost,
    private readonly pubsub: PubSub,
    private readonly logger: PubSubLogger,
  ) {
    host.onPeerRequest(SYNC_REQUEST, (from, body) => {
      const endpoint = typeof body.m === 'string' ? this.endpoints.get(body.m) : undefined;
      if (endpoint === undefined) throw new ConcordError('UNAVAILABLE', `no replicated map "${String(body.m)}" here`);
      return endpoint.answer(from.name, body);
    });
    host.onPeerMessage(SYNC_PUSH, (from, body) => {
      const endpoint = typeof body.m === 'string' ? this.endpoints.get(body.m) : undefined;
      endpoint?.push(from.name, body);
    });
  }

  /**
   * The map named `name`, created on first use. Options apply when the map is created; asking
   * again with options for an open map is an error (the loader cannot be compared).
   */
  open<V, K extends string = string>(name: string, options?: ReplicatedMapOptions<V>): ReplicatedMap<K, V> {
    if (this.closed) throw new ConcordError('STOPPED', 'node is stopping');
    if (typeof name !== 'string' || !NAME_PATTERN.test(name)) {
      throw new TypeError(`map name "${name}" must be 1-128 characters of letters, digits, _ . : / -`);
    }
    const existing = this.maps.get(name);
    if (existing !== undefined) {
      if (options !== undefined) throw new TypeError(`replicated map "${name}" is already open`);
      return existing as unknown as ReplicatedMap<K, V>;
    }
    const { host, pubsub, logger } = this;
    const map = new ReplicatedMap<K, V>(name, options ?? {}, {
      self: host.name,
      pubsub,
      clock: this.clock,
      link: {
        request: (peer, body, timeoutMs) => host.mesh.request(peer, body, timeoutMs),
        send: (peer, body) => host.mesh.send(peer, body),
      },
      members: () => host.shards.allMembers().map((m) => m.name),
      logger,
      register: (mapName, endpoint) => this.endpoints.set(mapName, endpoint),
      unregister: (mapName) => {
        this.endpoints.delete(mapName);
        this.maps.delete(mapName);
      },
    });
    this.maps.set(name, map as unknown as ReplicatedMap<string, unknown>);
    return map;
  }

  /** Names of the open maps. */
  names(): string[] {
    return [...this.maps.keys()];
  }

  /** The maps open on this node. */
  list(): ReplicatedMap<string, unknown>[] {
    return [...this.maps.values()];
  }

  close(): void {
    this.closed = true;
    for (const map of [...this.maps.values()]) map.close();
  }
}
