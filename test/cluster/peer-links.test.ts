/**
 * Peer links of real `concord node` processes (LocalCluster), with and without TLS:
 * - TLS: a 3-node cluster with generated certificates serves the entity walk-through; a node
 *   with a certificate from another CA, or with none, is refused and the cluster keeps serving;
 *   a byte flipped on one link (a proxy in front of n3) breaks only that connection, which
 *   reconnects, while the cluster keeps serving.
 * - Without TLS: what SECURITY.md says an on-path attacker can do, it can: a frame injected into
 *   an authenticated connection is acted on as the peer's own (here: an entity write); a
 *   malformed one only costs that connection.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCerts } from '../../src/cli/certs.js';
import { shardOf } from '../../src/cluster/hash.js';
import { type ClusterNode, eventually, LocalCluster } from '../../src/testing/local-cluster.js';
import { createPackr, encodeFrame } from '../../src/transport/frame.js';
import { TamperingProxy } from '../support/proxies.js';
import { tempDir } from '../support/tmp.js';
import { RawPeer } from '../transport/helpers.js';

interface ClusterBody {
  members: { name: string; status: string; connected: boolean }[];
  shards: { map: (string | null)[] };
}

async function members(node: ClusterNode): Promise<ClusterBody['members']> {
  return (await node.get<ClusterBody>('/cluster')).body.members;
}

async function allAlive(cluster: LocalCluster, names: string[]): Promise<void> {
  await cluster.eventually(
    async () => {
      for (const name of names) {
        const alive = (await members(cluster.node(name))).filter((m) => m.status === 'alive').map((m) => m.name);
        if (alive.sort().join() !== [...names].sort().join()) throw new Error(`${name} sees ${alive.join(',')}`);
      }
    },
    { timeout: 20_000 },
  );
}

/** An entity id whose shard `owner` holds, per `via`'s shard map. */
async function idOwnedBy(via: ClusterNode, owner: string, prefix: string): Promise<string> {
  // Right after a join the new member may not hold its shards yet.
  return eventually(
    async () => {
      const map = (await via.get<ClusterBody>('/cluster')).body.shards.map;
      for (let i = 0; i < 10_000; i++) {
        const id = `${prefix}-${i}`;
        if (map[shardOf('entity-state', id, map.length)] === owner) return id;
      }
      throw new Error(`${owner} holds no shard`);
    },
    { timeout: 10_000 },
  );
}

async function walkThrough(nodes: ClusterNode[], id: string): Promise<void> {
  const [n1, n2, n3] = nodes as [ClusterNode, ClusterNode, ClusterNode];
  for (const node of nodes)
    expect((await node.get(`/entities/${id}`)).body).toEqual({ id, state: 'initialized', version: 0 });
  expect((await n1.put(`/entities/${id}`, { state: 'working' })).body).toEqual({ id, state: 'working', version: 1 });
  for (const node of nodes)
    expect((await node.get(`/entities/${id}`)).body).toMatchObject({ state: 'working', version: 1 });
  expect((await n2.put(`/entities/${id}`, { state: 'finalized' })).body).toMatchObject({ version: 2 });
  const stale = await n3.put(`/entities/${id}`, { state: 'working' }, { 'if-match': '"1"' });
  expect(stale.status).toBe(412);
  for (const node of nodes) expect((await node.get(`/entities/${id}`)).body).toMatchObject({ state: 'finalized' });
}

describe('a TLS cluster', () => {
  let cluster: LocalCluster;
  let proxy: TamperingProxy;

  beforeAll(async () => {
    cluster = await LocalCluster.start({ nodes: 2, tls: true });
    // n3 sits behind a proxy: n1 and n2 dial it there (it sorts last, so they are the dialers).
    proxy = await TamperingProxy.start();
    const n3 = await cluster.addNode('n3', { args: ['--advertise-port', String(proxy.port)] });
    proxy.setTarget(`127.0.0.1:${n3.clusterPort}`);
    n3.launch();
    await n3.waitReady();
    await allAlive(cluster, ['n1', 'n2', 'n3']);
  });

  afterAll(async () => {
    await cluster?.destroy();
    await proxy?.close();
  });

  it('serves the entity walk-through on every node, over TLS links', async () => {
    expect(proxy.connections).toBe(2); // n1→n3 and n2→n3, through the proxy, inside TLS
    // With TLS, nodes on one host link over TCP all the same (no Unix sockets).
    for (const node of cluster.nodes) expect(await node.peerLinks(), node.name).toEqual({ unix: 0, tcp: 2 });
    await walkThrough(cluster.nodes, `tls-walk-${Date.now()}`);
    expect(cluster.node('n1').logs()).not.toMatch(/NOT encrypted/);
  });

  it('refuses a node with a certificate from another CA, or with none; the cluster keeps serving', async () => {
    const otherDir = tempDir('other-ca-');
    await makeCerts({ dir: otherDir, nodes: ['n4'] });
    const failuresBefore = await cluster.node('n1').metric('concord_peer_handshake_failures_total');
    const foreign = await cluster.addNode('n4', {
      tls: { cert: join(otherDir, 'n4.crt'), key: join(otherDir, 'n4.key'), ca: join(otherDir, 'ca.crt') },
    });
    const plain = await cluster.addNode('n5', { tls: false });
    try {
      foreign.launch();
      plain.launch();
      // Neither becomes a member: they stay joining, not ready, owning nothing.
      await cluster.eventually(
        async () => {
          const failures = await cluster.node('n1').metric('concord_peer_handshake_failures_total');
          if (failures < failuresBefore + 2) throw new Error(`n1 counted ${failures - failuresBefore} failures`);
        },
        { timeout: 15_000 },
      );
      // Still trying (it never exits on its own), registered as joining, owning nothing.
      await cluster.eventually(
        async () => {
          const seen = await members(cluster.node('n1'));
          for (const intruder of [foreign, plain]) {
            expect(intruder.running).toBe(true);
            expect(seen.find((m) => m.name === intruder.name)?.status).toBe('joining');
          }
        },
        { timeout: 10_000 },
      );
      // And it stays that way.
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const seen = await members(cluster.node('n1'));
      for (const name of ['n4', 'n5']) expect(seen.find((m) => m.name === name)?.status).toBe('joining');
      expect(plain.logs()).toMatch(/NOT encrypted/);
      // Plain TCP speaking garbage to a TLS cluster port is refused too, and counted.
      const before = await cluster.node('n2').metric('concord_peer_handshake_failures_total');
      const garbage = await RawPeer.connect(`127.0.0.1:${cluster.node('n2').clusterPort}`);
      garbage.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
      expect(await garbage.waitClosed(3000)).toBe(true);
      await cluster.eventually(async () => {
        expect(await cluster.node('n2').metric('concord_peer_handshake_failures_total')).toBeGreaterThan(before);
      });
      await walkThrough(cluster.nodes.slice(0, 3), `tls-refused-${Date.now()}`);
      await allAlive(cluster, ['n1', 'n2', 'n3']);
    } finally {
      await foreign.kill();
      await plain.kill();
    }
  });

  it('a byte flipped on one link breaks only that connection; it reconnects and the cluster keeps serving', async () => {
    const [n1, n2, n3] = cluster.nodes as [ClusterNode, ClusterNode, ClusterNode];
    const id = await idOwnedBy(n1, 'n3', 'flip');
    // A 503 is "certainly not applied": retried like a client would (seen once, right after the
    // previous test's intruders were killed).
    await cluster.eventually(
      async () => {
        const first = await n1.put(`/entities/${id}`, { state: 'working' });
        if (first.status !== 200) {
          process.stderr.write(`[peer-links] setup PUT answered ${first.status} ${JSON.stringify(first.body)}\n`);
          expect(first.status).toBe(503);
          throw new Error('retry');
        }
      },
      { timeout: 10_000, interval: 100 },
    );
    const connectionsBefore = proxy.connections;
    proxy.flipNext();
    // Traffic through the proxy, so that the flip lands soon (pings would do it within ~250 ms too).
    await Promise.allSettled([n1.get(`/entities/${id}`), n2.get(`/entities/${id}`)]);
    // Exactly one link breaks and is dialed again.
    await cluster.eventually(
      async () => {
        if (proxy.connections !== connectionsBefore + 1)
          throw new Error(`${proxy.connections - connectionsBefore} new connections`);
      },
      { timeout: 10_000 },
    );
    await allAlive(cluster, ['n1', 'n2', 'n3']);
    // …and the broken link is up again: until it is, a call over it is refused at once with
    // 503 (certainly not applied), as it should be.
    await cluster.eventually(
      async () => {
        for (const node of [n1, n2, n3]) {
          const down = (await members(node)).filter((m) => m.name !== node.name && !m.connected);
          if (down.length > 0) throw new Error(`${node.name}: no link to ${down.map((m) => m.name).join(', ')}`);
        }
      },
      { timeout: 10_000 },
    );
    for (const node of [n1, n2, n3]) {
      const answer = await node.get(`/entities/${id}`);
      expect(answer.status, JSON.stringify(answer.body)).toBe(200);
      expect(answer.body).toMatchObject({ state: 'working', version: 1 });
    }
    expect((await n2.put(`/entities/${id}`, { state: 'finalized' })).body).toMatchObject({ version: 2 });
    expect(n3.logs()).toMatch(/TLS: .*(decrypt|bad record mac|BAD_RECORD)/i);
    expect(await n3.metric('concord_evicted_total')).toBe(0);
  });
});

describe('a cluster without TLS (the documented risk: peer links are neither encrypted nor protected)', () => {
  let cluster: LocalCluster;
  let proxy: TamperingProxy;

  beforeAll(async () => {
    cluster = await LocalCluster.start({ nodes: 1 });
    proxy = await TamperingProxy.start();
    const n2 = await cluster.addNode('n2', { args: ['--advertise-port', String(proxy.port)] });
    proxy.setTarget(`127.0.0.1:${n2.clusterPort}`);
    n2.launch();
    await n2.waitReady();
    await allAlive(cluster, ['n1', 'n2']);
  });

  afterAll(async () => {
    await cluster?.destroy();
    await proxy?.close();
  });

  it('logs once at start-up that peer traffic is unencrypted', async () => {
    for (const node of cluster.nodes) expect(node.logs().match(/NOT encrypted/g)).toHaveLength(1);
    // n2 advertises the proxy's port, where no Unix socket is: n1 reaches it over TCP, through the proxy.
    expect(await cluster.node('n1').peerLinks()).toEqual({ unix: 0, tcp: 1 });
  });

  it('a frame injected on the path into an authenticated connection is acted on as the peer’s own', async () => {
    const [n1, n2] = cluster.nodes as [ClusterNode, ClusterNode];
    const id = await idOwnedBy(n1, 'n2', 'injected');
    expect((await n1.get(`/entities/${id}`)).body).toMatchObject({ state: 'initialized', version: 0 });
    // What n1 would send to route a write to n2: a request with a call in it. Request ids count
    // up from 1 on each connection; a high one does not collide with n1's own.
    const call = { t: 'call', k: 'entity-state', i: id, h: 'set', m: { state: 'finalized' }, d: 5000 };
    proxy.inject(encodeFrame(createPackr(), [0, 0xfffffff0, call], 1 << 20));
    await cluster.eventually(
      async () => {
        const answer = await n2.get(`/entities/${id}`);
        if (answer.body.version !== 1) throw new Error(`version ${String(answer.body.version)}`);
      },
      { timeout: 5000 },
    );
    // The write was applied and is durable, exactly as if n1 had asked: nobody made that request.
    for (const node of [n1, n2])
      expect((await node.get(`/entities/${id}`)).body).toMatchObject({ state: 'finalized', version: 1 });
    expect(proxy.pendingInjections).toBe(0);
  });

  it('an injected malformed frame only costs that connection, which comes back', async () => {
    const [n1, n2] = cluster.nodes as [ClusterNode, ClusterNode];
    const before = { connections: proxy.connections, errors: await n2.metric('concord_peer_protocol_errors_total') };
    proxy.inject(Buffer.from([0, 0, 0, 2, 0x91, 0x2a])); // [42]: no such message type
    await cluster.eventually(
      async () => {
        if ((await n2.metric('concord_peer_protocol_errors_total')) !== before.errors + 1)
          throw new Error('not counted');
        if (proxy.connections !== before.connections + 1) throw new Error('not reconnected');
        // The proxy counts the new TCP connection at once; the link is back once its handshake is.
        const n2Seen = (await members(n1)).find((m) => m.name === 'n2');
        if (n2Seen?.connected !== true) throw new Error('n1 is not linked to n2 again yet');
      },
      { timeout: 10_000 },
    );
    await allAlive(cluster, ['n1', 'n2']);
    const id = await idOwnedBy(n1, 'n2', 'after-garbage');
    expect((await n1.put(`/entities/${id}`, { state: 'working' })).body).toMatchObject({ version: 1 });
  });
});
