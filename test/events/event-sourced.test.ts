/**
 * Event-sourced entities on real node processes and real stores: commands append through the
 * fenced owner, state is rebuilt from snapshot + events on another node, domain errors travel
 * typed, and an append that does not follow the version the owner decided on applies nothing.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { WrongExpectedVersion } from '../../src/errors.js';
import { EventStore, type RecordedEvent } from '../../src/events/event-store.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/types.js';
import type { TryCallResult } from '../../src/testing/ipc-protocol.js';
import {
  backends,
  freshStoreUrl,
  idsOwnedBy,
  type ProcessNode,
  sleep,
  startCluster,
  status,
} from '../support/cluster.js';

const LEDGER = 'es-ledger';
const MEMBER = 'es-user';

interface LedgerState {
  balance: number;
  entries: number;
}

interface Reply<S> {
  state: S;
  version: number;
  events: { type: string; data: unknown }[];
}

const direct: Store[] = [];
afterEach(async () => {
  await Promise.all(direct.splice(0).map((s) => s.close()));
});

async function storeOf(url: string): Promise<{ store: Store; events: EventStore }> {
  const store = await openStore(url);
  direct.push(store);
  return { store, events: new EventStore(store, { node: 'outside' }) };
}

function tryCall(node: ProcessNode, kind: string, id: string, handler: string, message?: unknown) {
  return node.request({ op: 'try-call', kind, entityId: id, handler, message }) as Promise<TryCallResult>;
}

describe.each(backends)('event-sourced entities (%s)', (backend) => {
  it('appends through the owner, rebuilds from snapshot + events on another node after kill -9', async () => {
    const url = await freshStoreUrl(backend);
    const [a, b] = await startCluster({ store: url, nodes: 2, leaseTtlMs: 1500 });
    const [id] = await idsOwnedBy(a!, LEDGER, 1);
    // Called through b, run by the owner a: 25 events, snapshots every 10.
    let last: Reply<LedgerState> | null = null;
    for (let i = 1; i <= 23; i++) last = (await b!.call(LEDGER, id!, 'deposit', i)) as Reply<LedgerState>;
    last = (await b!.call(LEDGER, id!, 'depositEach', [24, 25])) as Reply<LedgerState>;
    expect(last).toMatchObject({ state: { balance: 325, entries: 25 }, version: 25 });
    expect(last.events).toEqual([
      { type: 'Deposited', data: { amount: 24 } },
      { type: 'Deposited', data: { amount: 25 } },
    ]);

    const { store, events } = await storeOf(url);
    const stream = await events.read(`${LEDGER}/${id}`);
    expect(stream.map((e) => e.version)).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
    expect(stream.every((e) => e.node === 'n1' && e.type === 'Deposited')).toBe(true);
    expect(stream.map((e) => (e.data as { amount: number }).amount)).toEqual(
      Array.from({ length: 25 }, (_, i) => i + 1),
    );
    const row = await store.readEntity(LEDGER, id!);
    expect(row?.version).toBe(25);
    expect(JSON.parse(row!.state)).toEqual({ v: 20, s: { balance: 210, entries: 20 } });

    await a!.kill();
    // b claims a's shards after the lease and rebuilds: snapshot at 20 + events 21…25.
    // (Until then its calls answer Unavailable at once; a client retries them.)
    expect(await b!.callUntilServed(LEDGER, id!, 'get', undefined)).toEqual({ balance: 325, entries: 25, version: 25 });
    expect(await b!.call(LEDGER, id!, 'deposit', 100)).toMatchObject({ state: { balance: 425 }, version: 26 });
    expect((await events.read(`${LEDGER}/${id}`, 26)).map((e) => [e.version, e.node])).toEqual([[26, 'n2']]);
  });

  it('a domain error travels typed to the calling node and appends nothing', async () => {
    const url = await freshStoreUrl(backend);
    const [a, b] = await startCluster({ store: url, nodes: 2 });
    const [id] = await idsOwnedBy(a!, LEDGER, 1);
    await b!.call(LEDGER, id!, 'deposit', 5);
    expect(await tryCall(b!, LEDGER, id!, 'withdraw', 8)).toEqual({
      ok: false,
      error: expect.objectContaining({
        code: 'DOMAIN_ERROR',
        details: { code: 'INSUFFICIENT_FUNDS', balance: 5 },
      }),
    });
    expect(await tryCall(a!, LEDGER, id!, 'deposit', -1)).toMatchObject({
      ok: false,
      error: { code: 'DOMAIN_ERROR', details: { code: 'BAD_AMOUNT', amount: -1 } },
    });
    const { events } = await storeOf(url);
    expect(await events.version(`${LEDGER}/${id}`)).toBe(1);
    expect(await b!.call(LEDGER, id!, 'get', undefined)).toEqual({ balance: 5, entries: 1, version: 1 });
  });

  it('an outside append makes the owner’s append apply nothing; the command is decided again on the fresh stream', async () => {
    const url = await freshStoreUrl(backend);
    const [a] = await startCluster({ store: url, nodes: 2 });
    const [id] = await idsOwnedBy(a!, MEMBER, 1);
    const streamName = `${MEMBER}/${id}`;
    expect(await a!.call(MEMBER, id!, 'join', 'red')).toMatchObject({ version: 1 });

    // An outside writer moves the user to green; the owner's memory still says red.
    const { store, events } = await storeOf(url);
    await events.append(
      streamName,
      [
        { type: 'TeamLeft', data: { teamId: 'red' } },
        { type: 'TeamJoined', data: { teamId: 'green' } },
      ],
      1,
    );
    // A writer that decided on a stale version is refused with a typed error.
    const stale = await events.append(streamName, [{ type: 'TeamLeft', data: { teamId: 'red' } }], 1).catch((e) => e);
    expect(stale).toBeInstanceOf(WrongExpectedVersion);
    expect((stale as WrongExpectedVersion).actualVersion).toBe(3);

    const fencedBefore = (await status(a!)).host.fenced;
    // The owner decides "leave red" at version 1 → its append at version 2 collides, nothing
    // applies, and the retried command leaves green at version 4.
    const reply = (await a!.call(MEMBER, id!, 'leave', undefined)) as Reply<{ teamId: string | null }>;
    expect(reply).toEqual({
      state: { teamId: null },
      version: 4,
      events: [{ type: 'TeamLeft', data: { teamId: 'green' } }],
    });
    expect((await status(a!)).host.fenced).toBe(fencedBefore + 1);
    const log: RecordedEvent[] = await events.read(streamName);
    expect(log.map((e) => [e.version, e.type, (e.data as { teamId: string }).teamId, e.node])).toEqual([
      [1, 'TeamJoined', 'red', 'n1'],
      [2, 'TeamLeft', 'red', 'outside'],
      [3, 'TeamJoined', 'green', 'outside'],
      [4, 'TeamLeft', 'green', 'n1'],
    ]);
    expect((await store.readEntity(MEMBER, id!))?.version).toBe(4);
  });

  it('concurrent commands from both nodes: every acknowledged event is in the log once, in version order', async () => {
    const url = await freshStoreUrl(backend);
    const [a, b] = await startCluster({ store: url, nodes: 2 });
    const [id] = await idsOwnedBy(b!, LEDGER, 1);
    const amounts = Array.from({ length: 200 }, (_, i) => i + 1);
    const replies = (await Promise.all(
      amounts.map((amount) => (amount % 2 ? a! : b!).call(LEDGER, id!, 'deposit', amount)),
    )) as Reply<LedgerState>[];
    const versions = replies.map((r) => r.version).sort((x, y) => x - y);
    expect(versions).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    const { events } = await storeOf(url);
    const log = await events.read(`${LEDGER}/${id}`);
    expect(log.map((e) => e.version)).toEqual(versions);
    // Each acknowledged deposit's event sits at exactly the version its reply named.
    for (const [i, reply] of replies.entries()) {
      expect(log[reply.version - 1]!.data).toEqual({ amount: amounts[i] });
    }
    expect(await a!.call(LEDGER, id!, 'get', undefined)).toMatchObject({ balance: 20_100, version: 200 });
  });

  it('a paused owner’s in-flight command is refused by the fence; nothing it decided lands after takeover', async () => {
    const url = await freshStoreUrl(backend);
    const [a, b] = await startCluster({ store: url, nodes: 2, leaseTtlMs: 1500 });
    const [id] = await idsOwnedBy(a!, LEDGER, 1);
    await b!.call(LEDGER, id!, 'deposit', 1);

    const inFlight = a!.call(LEDGER, id!, 'slowDeposit', { amount: 1000, delayMs: 300 }, 15_000).then(
      (value) => value as Reply<LedgerState>,
      () => null,
    );
    await sleep(100);
    await a!.pause();
    await sleep(2600); // past a's lease: b claims the shard and activates the ledger
    expect(await b!.call(LEDGER, id!, 'deposit', 10, 10_000)).toMatchObject({ version: 2 });
    a!.resume();
    const late = await inFlight;
    expect((await status(a!)).host.fenced).toBeGreaterThanOrEqual(1);

    const { events } = await storeOf(url);
    const log = await events.read(`${LEDGER}/${id}`);
    expect(log.slice(0, 2).map((e) => [e.version, e.data, e.node])).toEqual([
      [1, { amount: 1 }, 'n1'],
      [2, { amount: 10 }, 'n2'],
    ]);
    if (late) {
      // Retried as a fresh command at whoever owns the ledger then (b, or a again under a new
      // incarnation once it re-registered), decided on the state after the takeover.
      expect(late).toMatchObject({ version: 3, state: { balance: 1011, entries: 3 } });
      expect(log.slice(2).map((e) => [e.version, e.data])).toEqual([[3, { amount: 1000 }]]);
    } else {
      expect(log).toHaveLength(2);
    }
  });
});
