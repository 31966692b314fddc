/**
 * The peer transport alone, plain TCP against mutual TLS 1.3: two meshes in this process, C
 * requests in flight with a small routed-call body, alternating plain and TLS rounds (so that a
 * busy machine disturbs both alike); prints the median requests/s and CPU µs per request (both
 * ends together).
 *   node dist/bench/transport-tls.js [--rounds 6] [--seconds 1.5] [--concurrency 64]
 */
import { mkdtempSync, readFileSync } from 'node:fs';
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

const dir = mkdtempSync(join(tmpdir(), 'concord-transport-tls-'));
const made = await makeCerts({ dir, nodes: ['n1', 'n2'] });
const tlsOf = (name: string): MeshTlsOptions => {
  const files = made.nodes[name]!;
  return { cert: readFileSync(files.cert), key: readFileSync(files.key), ca: readFileSync(files.ca) };
};

async function pair(tls: boolean): Promise<[Mesh, Mesh]> {
  const mesh = (name: string) =>
    new Mesh({
      self: { name, incarnation: 1 },
      secret: 'transport-bench-secret-0123456789',
      host: '127.0.0.1',
      port: 0,
      ...(tls ? { tls: tlsOf(name) } : {}),
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
const kinds = ['plain', 'tls'] as const;
const pairs = { plain: await pair(false), tls: await pair(true) };
const results: Record<(typeof kinds)[number], { rps: number; cpuUs: number }[]> = { plain: [], tls: [] };
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
