/**
 * Throughput probe (not a pass/fail benchmark): two meshes in this process, 64 concurrent callers
 * doing small echo requests for ~2 s. Prints requests/s.
 */
import { afterEach, expect, it } from 'vitest';
import { closeAll, connectAll, startMesh } from './helpers.js';

afterEach(closeAll);

const CALLERS = 64;
const DURATION_MS = 2000;

it('echo throughput between two meshes', async () => {
  const a = await startMesh('node-a', 1, { pingIntervalMs: 1000 });
  const b = await startMesh('node-b', 1, { pingIntervalMs: 1000 });
  b.mesh.onRequest((_from, body) => body);
  await connectAll([a, b]);

  // Warm up the JIT.
  await Promise.all(Array.from({ length: 2000 }, (_, i) => a.mesh.request('node-b', { i }, 5000)));

  let done = 0;
  const deadline = performance.now() + DURATION_MS;
  const started = performance.now();
  const caller = async (c: number): Promise<void> => {
    const body = { kind: 'echo', caller: c, n: 0 };
    while (performance.now() < deadline) {
      body.n++;
      await a.mesh.request('node-b', body, 5000);
      done++;
    }
  };
  await Promise.all(Array.from({ length: CALLERS }, (_, c) => caller(c)));
  const elapsed = (performance.now() - started) / 1000;
  const rate = Math.round(done / elapsed);
  console.log(`transport echo: ${done} requests in ${elapsed.toFixed(2)} s = ${rate} req/s (${CALLERS} callers)`);
  expect(rate).toBeGreaterThan(0);
});
