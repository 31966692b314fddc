/**
 * Pub/sub and replicated-map figures, measured on real node processes over real sockets:
 *   node dist/bench/pubsub.js [--store sqlite|postgres-url] [--messages 1000000]
 *
 * - replicated map: time from the heal of a partition until both replicas hold identical
 *   contents, for 10k and 100k entries written during the partition (on both sides, with
 *   deletes of keys the other side updated), default map options (sync every 1 s). Two
 *   kinds of partition: short (frames lost, connections survive) and long (connections
 *   drop and are re-dialled by the transport after the heal).
 * - pub/sub: messages per second from a publisher on n1 to a subscriber on n2.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { ReplicatedMapStats } from '../src/pubsub/replicated-map.js';
import type { IpcNodeConfig, MapOp, PubSubOp, ReceivedReport } from '../src/testing/ipc-protocol.js';
import { ProcessNode } from '../src/testing/process-node.js';

const { values } = parseArgs({
  options: {
    store: { type: 'string', default: 'sqlite' },
    messages: { type: 'string', default: '1000000' },
  },
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function freshStore(): string {
  if (values.store === 'sqlite') return `sqlite:${join(mkdtempSync(join(tmpdir(), 'concord-bench-')), 'c.db')}`;
  return values.store!;
}

async function cluster(leaseTtlMs?: number): Promise<[ProcessNode, ProcessNode]> {
  const store = freshStore();
  const config = (name: string): IpcNodeConfig => ({
    name,
    store,
    secret: 'concord-bench-secret',
    faultInjection: true,
    leaseTtlMs,
  });
  const n1 = new ProcessNode(config('n1'));
  await n1.start();
  const n2 = new ProcessNode(config('n2'));
  await n2.start();
  return [n1, n2];
}

const map = (node: ProcessNode, op: MapOp) => node.request({ op: 'map', ...op });
const pubsub = (node: ProcessNode, op: PubSubOp) => node.request({ op: 'pubsub', ...op });
const stats = async (node: ProcessNode, name: string) =>
  (await map(node, { action: 'stats', name })) as ReplicatedMapStats;

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 120_000, everyMs = 5): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value !== undefined) return value;
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

async function write(node: ProcessNode, name: string, keys: string[], value: unknown): Promise<void> {
  for (let i = 0; i < keys.length; i += 10_000) {
    await map(node, { action: 'set', name, entries: keys.slice(i, i + 10_000).map((k) => [k, value]) });
  }
}

async function remove(node: ProcessNode, name: string, keys: string[]): Promise<void> {
  for (let i = 0; i < keys.length; i += 10_000)
    await map(node, { action: 'delete', name, keys: keys.slice(i, i + 10_000) });
}

const range = (prefix: string, from: number, to: number) =>
  Array.from({ length: to - from }, (_, i) => `${prefix}${from + i}`);

/**
 * `count` writes during a partition: n1 updates a quarter of a shared base and adds a quarter
 * new; n2 deletes a quarter of the base (half of it keys n1 updated) and adds a quarter new.
 * Resolves with ms from heal to reconnection (long only) and to identical digests.
 */
async function convergence(count: number, long: boolean): Promise<{ reconnect: number; converged: number }> {
  // Ping period is lease/3 and 3 silent periods close a connection: a 20 s lease keeps
  // connections alive through a short partition; the default 1.5 s lets them drop.
  const [n1, n2] = await cluster(long ? undefined : 20_000);
  try {
    const name = 'bench';
    const topic = `$rmap:${name}`;
    for (const n of [n1, n2]) await map(n, { action: 'open', name });
    const q = count / 4;
    const base = range('base-', 0, 2 * q);
    await write(n1, name, base, { v: 0, note: 'shared before the partition' });
    await until('base replicated', async () => ((await stats(n2, name)).size === base.length ? true : undefined));

    await Promise.all([n1.faults({ dropTo: ['n2'] }), n2.faults({ dropTo: ['n1'] })]);
    await write(n1, name, base.slice(0, q), { v: 1, side: 'n1' });
    await write(n1, name, range('n1-', 0, q), { v: 1, side: 'n1' });
    await remove(n2, name, base.slice(q / 2, q + q / 2));
    await write(n2, name, range('n2-', 0, q), { v: 1, side: 'n2' });
    if (long) {
      await until(
        'connection dropped',
        async () => (((await pubsub(n1, { action: 'members', topic })) as string[]).includes('n2') ? undefined : true),
        20_000,
        50,
      );
    }
    const [d1, d2] = [(await stats(n1, name)).digest, (await stats(n2, name)).digest];
    if (d1 === d2) throw new Error('replicas equal before the heal: the partition did not hold');

    await Promise.all([n1.faults({ allow: 'all' }), n2.faults({ allow: 'all' })]);
    const healed = performance.now();
    let reconnect = 0;
    if (long) {
      await until('reconnected', async () =>
        ((await pubsub(n1, { action: 'members', topic })) as string[]).includes('n2') ? true : undefined,
      );
      reconnect = performance.now() - healed;
    }
    await until('convergence', async () => {
      const [a, b] = await Promise.all([stats(n1, name), stats(n2, name)]);
      return a.digest === b.digest ? true : undefined;
    });
    const converged = performance.now() - healed;
    const [a, b] = await Promise.all([stats(n1, name), stats(n2, name)]);
    const expected = 2 * q + 2 * q - q; // base + two new quarters - deleted quarter
    if (a.size !== expected || b.size !== expected) throw new Error(`sizes ${a.size}/${b.size}, expected ${expected}`);
    return { reconnect, converged };
  } finally {
    await Promise.all([n1.kill(), n2.kill()]);
  }
}

async function pubsubRate(messages: number): Promise<{ ms: number; rate: number }> {
  const [n1, n2] = await cluster();
  try {
    await pubsub(n2, { action: 'subscribe', topic: 'rate' });
    await until('interest', async () =>
      ((await pubsub(n1, { action: 'members', topic: 'rate' })) as string[]).includes('n2') ? true : undefined,
    );
    // Warm-up.
    await pubsub(n1, { action: 'publish', topic: 'rate', count: 50_000 });
    await until('warm-up', async () =>
      ((await pubsub(n2, { action: 'received', topic: 'rate' })) as ReceivedReport).total >= 50_000 ? true : undefined,
    );
    const sent = (await pubsub(n1, { action: 'publish', topic: 'rate', count: messages })) as { startedAt: number };
    const report = await until('delivery', async () => {
      const r = (await pubsub(n2, { action: 'received', topic: 'rate' })) as ReceivedReport;
      return r.total >= 50_000 + messages ? r : undefined;
    });
    const sender = report.senders.n1;
    if (sender?.reordered !== 0 || sender.gaps !== 0) throw new Error(`FIFO broken: ${JSON.stringify(sender)}`);
    const ms = report.lastAt - sent.startedAt;
    return { ms, rate: (messages / ms) * 1000 };
  } finally {
    await Promise.all([n1.kill(), n2.kill()]);
  }
}

async function main(): Promise<void> {
  console.log(
    `concord pub/sub + replicated map — store ${values.store === 'sqlite' ? 'SQLite' : 'PostgreSQL'}, Node ${process.version}\n`,
  );
  console.log('| replicated map: writes during the partition | partition | heal → reconnected | heal → identical |');
  console.log('|---|---|---|---|');
  for (const count of [10_000, 100_000]) {
    for (const long of [false, true]) {
      const r = await convergence(count, long);
      console.log(
        `| ${count.toLocaleString('en-US')} | ${long ? 'long (connections dropped)' : 'short (connections kept)'} | ${long ? `${r.reconnect.toFixed(0)} ms` : '—'} | ${r.converged.toFixed(0)} ms |`,
      );
    }
  }
  const messages = Number(values.messages);
  const p = await pubsubRate(messages);
  console.log(
    `\npub/sub n1 → n2: ${messages.toLocaleString('en-US')} messages ({s: n}) in ${p.ms.toFixed(0)} ms = ${Math.round(p.rate).toLocaleString('en-US')} msg/s, FIFO, none lost`,
  );
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
