import type { FastifyInstance } from 'fastify';
import { Counter, collectDefaultMetrics, Gauge, type Registry } from 'prom-client';
import { LatencyMetrics } from '../latency-metrics.js';
import type { SharedWriterStatus } from '../store/sqlite-writer.js';
import type { AppNode } from './app.js';
import type { NodeIntrospection, RuntimeCounters } from './introspection.js';

/**
 * `GET /metrics` in Prometheus text format. HTTP calls are measured by an onResponse hook
 * (labelled by route template, never by raw URL, so ids cannot blow up the cardinality);
 * node state is read from the node's own counters at scrape time by collect callbacks.
 * Each server has its own registry (several nodes may run in one process in tests).
 */

const HTTP_LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Status codes as label values, made once each. */
const statusTexts = new Map<number, string>();
function statusText(status: number): string {
  let text = statusTexts.get(status);
  if (text === undefined) {
    text = String(status);
    statusTexts.set(status, text);
  }
  return text;
}

export function registerMetrics(http: FastifyInstance, node: AppNode, introspection: NodeIntrospection): void {
  // The node's own registry (calls, leases, store, handoffs, failovers…) gets the HTTP,
  // process and scrape-time metrics too, so one /metrics serves them all.
  const registry: Registry = introspection.telemetry.registry;
  // prom-client's default metrics already start with process_ / nodejs_: the prefix is `concord_`.
  collectDefaultMetrics({ register: registry, prefix: 'concord_' });

  // Every request is observed: counted and timed in plain arrays (LatencyMetrics), not through
  // prom-client's labelled observe, and from a synchronous hook (no promise per request).
  const requests = new LatencyMetrics(['method', 'route', 'status'], HTTP_LATENCY_BUCKETS);
  registry.registerMetric(
    requests.counter('concord_http_requests_total', 'HTTP requests answered, by method, route template and status'),
  );
  registry.registerMetric(
    requests.histogram(
      'concord_http_request_duration_seconds',
      'HTTP request latency, by method, route template and status',
    ),
  );
  http.addHook('onResponse', (request, reply, done) => {
    const route = request.routeOptions.url ?? 'unmatched';
    requests.record([request.method, route, statusText(reply.statusCode)], reply.elapsedTime / 1000);
    done();
  });

  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });
  gauge('concord_node_ready', '1 while the node holds a valid lease and has a shard map', () => (node.ready ? 1 : 0));
  gauge('concord_active_entities', 'Entities active in memory on this node', () => node.status().activeEntities);
  gauge('concord_shards_held', 'Shards this node owns', () => node.status().shards.held.length);
  const owned = new Gauge({
    name: 'concord_shards_owned',
    help: 'Shards owned by each member, as this node sees the shard map (owner "none": no live owner)',
    labelNames: ['owner'],
    registers: [registry],
    collect() {
      owned.reset();
      const shards = node.status().shards;
      for (const [owner, count] of Object.entries(shards.owners)) owned.set({ owner }, count);
      if (shards.count > 0) owned.set({ owner: 'none' }, shards.unowned);
    },
  });
  gauge('concord_lease_remaining_seconds', 'Time left on this node’s lease by its own clock', () =>
    Math.max(0, node.status().leaseRemainingMs / 1000),
  );
  gauge(
    'concord_members_alive',
    'Members of the cluster with a live lease, as seen by this node',
    () => node.status().members.filter((m) => m.status === 'alive').length,
  );

  new Gauge({
    name: 'concord_refused_joins_last_hour',
    help: 'Nodes refused in the last hour because their cluster secret is not the cluster’s (recorded in the store, so every node reports the whole cluster’s)',
    registers: [registry],
    async collect() {
      const { now, joins } = await introspection.refusedJoins();
      this.set(joins.filter((join) => now - join.at <= 3_600_000).length);
    },
  });

  // Counters mirror the node's monotonic stats: at scrape time, add what was counted since.
  const monotonicCounter = (name: string, help: string, read: () => number | Promise<number>) => {
    let seen = 0;
    return new Counter({
      name,
      help,
      registers: [registry],
      async collect() {
        const value = await read();
        if (value > seen) this.inc(value - seen);
        seen = Math.max(seen, value);
      },
    });
  };
  const counter = (name: string, help: string, field: keyof RuntimeCounters) =>
    monotonicCounter(name, help, () => introspection.counters()[field]);
  counter('concord_commits_total', 'Group-commit transactions written to the store', 'commits');
  counter('concord_fenced_writes_total', 'Writes refused by the store because a newer owner exists', 'fenced');
  counter(
    'concord_idempotent_replays_total',
    'Keyed calls answered with the reply stored under their idempotency key, without running again',
    'replays',
  );
  counter('concord_call_retries_total', 'Call attempts retried while ownership moved', 'retries');
  counter('concord_turns_total', 'Entity turns run on this node', 'turns');
  counter('concord_activations_total', 'Entity activations on this node', 'activations');
  counter('concord_passivations_total', 'Entity passivations on this node', 'passivations');
  counter('concord_local_calls_total', 'Calls served by this node as owner', 'localCalls');
  counter('concord_remote_calls_total', 'Calls forwarded to the owning peer', 'remoteCalls');
  counter('concord_calls_served_for_peers_total', 'Calls this node served for other nodes', 'servedForPeers');
  counter(
    'concord_suspicions_raised_total',
    'Members this node recorded in the store as unreachable (after the suspicion timeout and an indirect probe)',
    'suspicionsRaised',
  );
  counter(
    'concord_suspicions_cleared_total',
    'Suspicions this node withdrew (the member became reachable or left)',
    'suspicionsCleared',
  );
  counter(
    'concord_indirect_probes_total',
    'Indirect probes: other members asked whether they reach a member',
    'probes',
  );
  counter(
    'concord_evictions_total',
    'Members this node evicted through the store (its decisions that applied)',
    'evictionsDecided',
  );
  counter('concord_evicted_total', 'Times this node itself was evicted by the other members', 'evictedSelf');
  counter(
    'concord_joins_total',
    'Times this node became a member (at start and after each eviction or lost lease)',
    'joins',
  );
  const members = new Gauge({
    name: 'concord_members',
    help: 'Membership rows as this node sees them, by status (alive, joining, leaving, suspected, evicted, dead)',
    labelNames: ['status'],
    registers: [registry],
    collect() {
      members.reset();
      for (const member of node.status().members) members.inc({ status: member.status });
    },
  });
  monotonicCounter(
    'concord_peer_handshake_failures_total',
    'Peer connections whose handshake failed on this node (wrong secret, bad frames, timeout, peer hung up)',
    () => introspection.peerHandshakeFailures(),
  );

  // Peer traffic: counters per peer and direction, mirrored from the transport at scrape time.
  const traffic = (name: string, help: string, field: 'frames' | 'bytes') => {
    const seen = new Map<string, number>();
    const metric: Counter<'peer' | 'direction'> = new Counter({
      name,
      help,
      labelNames: ['peer', 'direction'],
      registers: [registry],
      collect() {
        for (const [peer, t] of introspection.peerTraffic()) {
          const values = field === 'frames' ? { in: t.framesIn, out: t.framesOut } : { in: t.bytesIn, out: t.bytesOut };
          for (const [direction, value] of Object.entries(values)) {
            const key = `${peer}\u0000${direction}`;
            const before = seen.get(key) ?? 0;
            if (value > before) metric.inc({ peer, direction }, value - before);
            seen.set(key, Math.max(before, value));
          }
        }
      },
    });
  };
  traffic(
    'concord_transport_frames_total',
    'Frames exchanged with each peer over the cluster transport, by direction (in, out)',
    'frames',
  );
  traffic(
    'concord_transport_bytes_total',
    'Bytes exchanged with each peer over the cluster transport, by direction (in, out)',
    'bytes',
  );

  const links = new Gauge({
    name: 'concord_peer_links',
    help: 'Open connections to peers, by peer and by what carries them: unix (a peer on this host) or tcp',
    labelNames: ['peer', 'link'],
    registers: [registry],
    collect() {
      links.reset();
      for (const [peer, link] of introspection.peerLinks()) links.set({ peer, link }, 1);
    },
  });

  const mapEntries = new Gauge({
    name: 'concord_replicated_map_entries',
    help: 'Live entries of each replicated map open on this node',
    labelNames: ['map'],
    registers: [registry],
    collect() {
      mapEntries.reset();
      mapLag.reset();
      for (const map of introspection.replicatedMaps()) {
        mapEntries.set({ map: map.name }, map.size);
        mapLag.set({ map: map.name }, map.syncLagMs / 1000);
      }
    },
  });
  const mapLag = new Gauge({
    name: 'concord_replicated_map_sync_lag_seconds',
    help: 'Longest time, since the previous scrape, between a write on another node (its hybrid clock) and its arrival here, per replicated map',
    labelNames: ['map'],
    registers: [registry],
  });
  monotonicCounter(
    'concord_peer_protocol_errors_total',
    'Authenticated peer connections this node dropped because the peer sent a malformed or oversized frame or an unknown message',
    () => introspection.peerProtocolErrors(),
  );

  // SQLite's shared writer (on by default): which node process commits the file's writes, and
  // what forwarding costs. A re-run means the writer did not answer a batch in time (it was
  // paused, dying or failing) and the sender committed it itself. Collects run in parallel:
  // they share one read of the status per scrape.
  let writerRead: { at: number; status: Promise<SharedWriterStatus | null> } | null = null;
  const writerStatus = (): Promise<SharedWriterStatus | null> => {
    const now = performance.now();
    if (writerRead === null || now - writerRead.at > 100) {
      writerRead = { at: now, status: introspection.sharedWriter().catch(() => null) };
    }
    return writerRead.status;
  };
  const writerRole = new Gauge({
    name: 'concord_sqlite_writer_role',
    help: "1 on the role this node process has for its SQLite file's shared writer: writer (it commits every local node's writes) or follower (it forwards its writes); no series without a shared writer",
    labelNames: ['role'],
    registers: [registry],
    async collect() {
      const status = await writerStatus();
      writerRole.reset();
      if (status === null) return;
      writerRole.set({ role: 'writer' }, status.role === 'writer' ? 1 : 0);
      writerRole.set({ role: 'follower' }, status.role === 'follower' ? 1 : 0);
    },
  });
  const writerCounter = (name: string, help: string, read: (status: SharedWriterStatus) => number) =>
    monotonicCounter(name, help, async () => {
      const status = await writerStatus();
      return status === null ? 0 : read(status);
    });
  writerCounter(
    'concord_sqlite_writer_commits_total',
    "Transactions this node process committed as its SQLite file's shared writer",
    (status) => status.commits,
  );
  writerCounter(
    'concord_sqlite_writer_forwarded_batches_total',
    "Write batches this node process forwarded to its SQLite file's shared writer",
    (status) => status.forwarded,
  );
  writerCounter(
    'concord_sqlite_writer_reruns_total',
    'Forwarded write batches the shared writer did not answer (paused, gone or failing), committed by this node process itself instead',
    (status) => status.rerun,
  );

  http.get('/metrics', async (_request, reply) => {
    const text = await registry.metrics();
    return reply.type(registry.contentType).send(text);
  });
}
