/**
 * The peer transport alone, by what carries the link: plain TCP on loopback, a Unix socket (two
 * nodes on one host, the default there) and mutual TLS 1.3. Two meshes in this process, C
 * requests in flight with a small routed-call body, the kinds' rounds alternating (so that a
 * busy machine disturbs them alike); prints the median requests/s and CPU µs per request (both
 * ends together).
 *   node dist/bench/transport.js [--rounds 6] [--seconds 1.5] [--concurrency 64]
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeCerts } from '../src/cli/certs.js';
import { Mesh } from '../src/transport/mesh.js';
import type { MeshTlsOptions } from '../src/transport/tls.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '6' },
    seconds: { type: 'string', default: '1.5' },
    concurrency: { type: 'string', default: '64' },
  },
});
const rounds = Number(values.rounds);
const ms = Number(values.seconds) * 1000;
const concurrency = Number(values.concurrency);

const dir = mkdtempSync(join(tmpdir(), 'concord-transport-'));
const made = await makeCerts({ dir, nodes: ['n1', 'n2'] });
const tlsOf = (name: string): MeshTlsOptions => {
  const files = made.nodes[name]!;
  return { cert: readFileSync(files.cert), key: readFileSync(files.key), ca: readFileSync(files.ca) };
};

const kinds = ['tcp', 'unix', 'tls'] as const;
type Kind = (typeof kinds)[number];

async function pair(kind: Kind): Promise<[Mesh, Mesh]> {
  const mesh = (name: string) =>
    new Mesh({
      self: { name, incarnation: 1 },
      secret: 'transport-bench-secret-0123456789',
      host: '127.0.0.1',
      port: 0,
      localSockets: kind === 'unix',
      ...(kind === 'tls' ? { tls: tlsOf(name) } : {}),
    });
  const a = mesh('n1');
  const b = mesh('n2');
  const [aa, ba] = [await a.listen(), await b.listen()];
  b.onRequest((_from, body) => ({ v: body }));
  const peers = [
    { name: 'n1', incarnation: 1, address: `127.0.0.1:${aa.port}` },
    { name: 'n2', incarnation: 1, address: `127.0.0.1:${ba.port}` },
  ];
  a.setPeers(peers);
  b.setPeers(peers);
  while (!a.isConnected('n2')) await new Promise((resolve) => setTimeout(resolve, 10));
  if (a.linkKind('n2') !== (kind === 'unix' ? 'unix' : 'tcp'))
    throw new Error(`${kind}: linked by ${a.linkKind('n2')}`);
  return [a, b];
}

async function round(a: Mesh, durationMs: number): Promise<{ rps: number; cpuUs: number }> {
  let n = 0;
  const end = performance.now() + durationMs;
  const cpu0 = process.cpuUsage();
  const body = { t: 'call', k: 'entity-state', i: 'e-123', h: 'get', d: 5000 };
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        await a.request('n2', body, 5000);
        n++;
      }
    }),
  );
  const cpu = process.cpuUsage(cpu0);
  return { rps: n / (durationMs / 1000), cpuUs: (cpu.user + cpu.system) / n };
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
const pairs = { tcp: await pair('tcp'), unix: await pair('unix'), tls: await pair('tls') };
const results: Record<Kind, { rps: number; cpuUs: number }[]> = { tcp: [], unix: [], tls: [] };
for (const kind of kinds) await round(pairs[kind][0], 500); // warm-up
for (let i = 0; i < rounds; i++) for (const kind of kinds) results[kind].push(await round(pairs[kind][0], ms));
for (const kind of kinds) {
  const rps = results[kind].map((r) => r.rps);
  process.stdout.write(
    `${kind.padEnd(5)} median ${Math.round(median(rps)).toLocaleString('en-US')} requests/s, ` +
      `${median(results[kind].map((r) => r.cpuUs)).toFixed(1)} µs CPU per request (rounds: ${rps.map((r) => Math.round(r)).join(', ')})\n`,
  );
}
for (const kind of kinds) for (const mesh of pairs[kind]) await mesh.close();
rmSync(dir, { recursive: true, force: true });
