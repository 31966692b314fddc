/**
 * Every peer message type of a real node (`concord node`), with fields of the wrong type: an
 * authenticated peer (it holds the secret) sends generated requests and fire-and-forget messages
 * of every type the node handles — routed calls, probes, membership hints, pub/sub and replicated
 * map traffic — and of types it does not know. Each request must get an answer or an error
 * answer, the connection must survive well-formed frames, and the node must keep serving with
 * nothing lost. (What a peer with the secret may legitimately do — call any entity — is not
 * refused: see SECURITY.md.)
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lease } from '../../src/cluster/lease.js';
import { createLogger } from '../../src/logger.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/types.js';
import { type ClusterNode, LocalCluster } from '../../src/testing/local-cluster.js';
import { RawPeer } from '../transport/helpers.js';
import { announce, FUZZ_TOTAL_RUNS, params } from './settings.js';

const RUNS = Math.max(100, Math.round(FUZZ_TOTAL_RUNS / 300));
const REQUEST_TYPES = ['call', 'probe', 'ps.hello', 'rm.sync', 'released', 'nope'];
const MESSAGE_TYPES = ['released', 'leaving', 'joined', 'evicted', 'ps.sub', 'ps.pub', 'rm.push', 'call', 'nope'];

let cluster: LocalCluster;
let node: ClusterNode;
let store: Store;
let lease: Lease;

const value = fc.anything({ maxDepth: 2, withDate: true, withTypedArray: true, withBigInt: false });
const field = fc.oneof(
  value,
  fc.string({ maxLength: 20 }),
  fc.integer(),
  fc.constantFrom(
    'entity-state',
    'account',
    'user-sessions',
    'accounts.users',
    'e1',
    'get',
    'set',
    'n1',
    'root',
    'ping',
  ),
  fc.array(fc.string({ maxLength: 10 }), { maxLength: 3 }),
);
/** A body shaped like the node's messages: its type and any of the fields they use, of any type. */
function bodyOf(types: string[]): fc.Arbitrary<Record<string, unknown>> {
  return fc
    .record(
      {
        t: fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...types) }, { weight: 1, arbitrary: value }),
        k: field,
        i: field,
        h: field,
        m: field,
        d: field,
        y: field,
        n: field,
        s: field,
        e: field,
        p: field,
        topics: field,
        topic: field,
        msgs: field,
      },
      { requiredKeys: ['t'] },
    )
    .map((r) => r as Record<string, unknown>);
}

beforeAll(async () => {
  announce('peer messages');
  cluster = await LocalCluster.start({ nodes: 1 });
  node = cluster.node('n1');
  // The fuzzing peer registers in the membership table (as a joining node, owning nothing), so
  // that the node keeps its connection instead of closing it as "not in the peer set".
  store = await openStore(cluster.store);
  lease = new Lease(
    store,
    {
      name: 'a-fuzz',
      address: '127.0.0.1:1',
      httpAddress: null,
      ttlMs: 3000,
      marginMs: 300,
      renewIntervalMs: 500,
      nameWaitMs: 10_000,
    },
    createLogger({}, 'silent'),
  );
  await lease.acquire();
  lease.start();
});

afterAll(async () => {
  lease?.stop();
  await cluster?.destroy();
  await store?.close();
});

describe('peer messages of every type, fuzzed against a real node', () => {
  it('requests are answered, messages are absorbed, the node keeps serving', async () => {
    expect((await node.put('/entities/peer-fuzz-keep', { state: 'working' })).status).toBe(200);
    const clusterBody = (await node.get<{ members: { name: string; address: string }[] }>('/cluster')).body;
    const address = clusterBody.members.find((m) => m.name === 'n1')!.address;
    let peer: RawPeer | null = null;
    let nextId = 1;
    const incarnation = lease.incarnation!;
    const connected = async (): Promise<RawPeer> => {
      if (peer !== null && !peer.closed) return peer;
      const fresh = await RawPeer.connect(address);
      await fresh.handshake({ name: 'a-fuzz', incarnation }, cluster.secret);
      peer = fresh;
      return fresh;
    };
    let answered = 0;
    // Like a real peer, keep talking: the node closes a connection silent for a lease.
    const keepAlive = setInterval(() => {
      if (peer !== null && !peer.closed) peer.write(Buffer.from([0, 0, 0, 2, 0x91, 4]));
    }, 200);
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            bodyOf(REQUEST_TYPES).map((b) => ['request', b] as const),
            bodyOf(MESSAGE_TYPES).map((b) => ['message', b] as const),
          ),
          {
            minLength: 1,
            maxLength: 5,
          },
        ),
        async (frames) => {
          const raw = await connected();
          const ids: number[] = [];
          const sent = new Map<number, unknown>();
          for (const [kind, body] of frames) {
            if (kind === 'request') {
              const id = nextId++;
              ids.push(id);
              sent.set(id, body);
              raw.writeValue([0, id, body]);
            } else raw.writeValue([3, body]);
          }
          // Every request is answered — a response or an error response, in any order — never silence.
          const deadline = Date.now() + 5000;
          const pending = new Set(ids);
          while (pending.size > 0) {
            let frame: unknown;
            try {
              frame = await raw.nextFrame(Math.max(1, deadline - Date.now()));
            } catch (error) {
              expect.fail(
                `requests ${[...pending].map((id) => JSON.stringify(sent.get(id))).join(', ')} were not answered (${String(error)}); the node's log:\n${node.logs().slice(-2000)}`,
              );
            }
            if (Array.isArray(frame) && (frame[0] === 1 || frame[0] === 2) && pending.delete(frame[1] as number))
              answered++;
          }
        },
      ),
      { ...params(RUNS), endOnFailure: true },
    );
    clearInterval(keepAlive);
    (peer as RawPeer | null)?.destroy();
    process.stdout.write(`[fuzz] peer messages: ${RUNS} runs, ${answered} requests answered\n`);
    expect(answered).toBeGreaterThan(RUNS / 2);
    expect(node.running).toBe(true);
    expect((await node.get('/readyz')).status).toBe(200);
    expect((await node.get('/entities/peer-fuzz-keep')).body).toMatchObject({ state: 'working', version: 1 });
    expect(await node.metric('concord_peer_protocol_errors_total')).toBe(0);
  });
});
