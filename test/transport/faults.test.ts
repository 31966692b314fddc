import { afterEach, describe, expect, it } from 'vitest';
import { PeerUnreachable } from '../../src/transport/errors.js';
import { FaultSwitch } from '../../src/transport/faults.js';
import type { PeerId } from '../../src/transport/types.js';
import { closeAll, connectAll, RawPeer, rejectionOf, sleep, startMesh, waitFor } from './helpers.js';

afterEach(closeAll);

// Tests use pingIntervalMs 200: a silent peer is closed after > 600 ms.

describe('FaultSwitch', () => {
  it('tracks dropped peers and the store-cut flag', () => {
    const f = new FaultSwitch();
    expect(f.isDropped('x')).toBe(false);
    f.dropTo(['x', 'y']);
    expect(f.isDropped('x') && f.isDropped('y')).toBe(true);
    f.allow(['x']);
    expect(f.isDropped('x')).toBe(false);
    expect(f.droppedPeers()).toEqual(['y']);
    f.allow();
    expect(f.isDropped('y')).toBe(false);
    expect(f.storeCut).toBe(false);
    f.cutStore();
    expect(f.storeCut).toBe(true);
    f.restoreStore();
    expect(f.storeCut).toBe(false);
  });
});

describe('partitions', () => {
  async function pair() {
    const fa = new FaultSwitch();
    const fb = new FaultSwitch();
    const a = await startMesh('node-a', 1, { faults: fa });
    const b = await startMesh('node-b', 1, { faults: fb });
    a.mesh.onRequest((_f, body) => ({ a: body }));
    b.mesh.onRequest((_f, body) => ({ b: body }));
    await connectAll([a, b]);
    const downs: string[] = [];
    a.mesh.on('peer-down', (p) => downs.push(`a lost ${p.name}`));
    b.mesh.on('peer-down', (p) => downs.push(`b lost ${p.name}`));
    return { a, b, fa, fb, downs };
  }

  it('dropTo on both sides makes requests fail, allow heals', async () => {
    const { a, b, fa, fb, downs } = await pair();
    expect(await a.mesh.request('node-b', 1, 1000)).toEqual({ b: 1 });

    fa.dropTo(['node-b']);
    fb.dropTo(['node-a']);
    // Written into the partition: no answer.
    const during = await rejectionOf(a.mesh.request('node-b', 2, 300));
    expect(during.name === 'Timeout' || during instanceof PeerUnreachable).toBe(true);
    expect(a.mesh.send('node-b', 'lost')).toBe(true); // a partition is invisible to the sender
    // Liveness notices within ~3 ping intervals, on both sides.
    await waitFor(() => !a.mesh.isConnected('node-b') && !b.mesh.isConnected('node-a'), 2000, 'link down');
    expect(downs.sort()).toEqual(['a lost node-b', 'b lost node-a']);
    const after = await rejectionOf(b.mesh.request('node-a', 3, 300));
    expect(after).toBeInstanceOf(PeerUnreachable);
    // Re-dials keep failing while the partition lasts.
    await sleep(700);
    expect(a.mesh.isConnected('node-b')).toBe(false);

    fa.allow();
    fb.allow();
    await waitFor(() => a.mesh.isConnected('node-b') && b.mesh.isConnected('node-a'), 3000, 'heal');
    expect(await a.mesh.request('node-b', 4, 1000)).toEqual({ b: 4 });
    expect(await b.mesh.request('node-a', 5, 1000)).toEqual({ a: 5 });
  });

  it('after a long partition, allow re-dials at once instead of waiting out a dropped handshake', async () => {
    // Production-like timings: a 2 s handshake timeout and a backoff that grows to 1 s.
    const fa = new FaultSwitch();
    const fb = new FaultSwitch();
    const options = { handshakeTimeoutMs: 2000, backoff: { baseMs: 50, capMs: 1000 } };
    const a = await startMesh('node-a', 1, { faults: fa, ...options });
    const b = await startMesh('node-b', 1, { faults: fb, ...options });
    b.mesh.onRequest((_f, body) => ({ b: body }));
    await connectAll([a, b]);
    fa.dropTo(['node-b']);
    fb.dropTo(['node-a']);
    await waitFor(() => !a.mesh.isConnected('node-b') && !b.mesh.isConnected('node-a'), 2000, 'link down');
    await sleep(1500); // re-dials are under way, their handshakes silently dropped

    const healedAt = performance.now();
    fa.allow();
    fb.allow();
    await waitFor(() => a.mesh.isConnected('node-b') && b.mesh.isConnected('node-a'), 3000, 'heal');
    expect(performance.now() - healedAt).toBeLessThan(500);
    expect(await a.mesh.request('node-b', 1, 1000)).toEqual({ b: 1 });
  });

  it('a request made during a partition succeeds if the partition heals before its deadline', async () => {
    const { a, fa, fb } = await pair();
    fa.dropTo(['node-b']);
    fb.dropTo(['node-a']);
    await waitFor(() => !a.mesh.isConnected('node-b'), 2000, 'link down');
    const pending = a.mesh.request('node-b', 'patient', 4000);
    await sleep(100);
    fa.allow(['node-b']);
    fb.allow(['node-a']);
    expect(await pending).toEqual({ b: 'patient' });
  });

  it('a one-way cut (dropTo on one side only) takes the link down on both sides', async () => {
    const { a, b, fb, downs } = await pair();
    fb.dropTo(['node-a']); // b → a lost; a → b still flows
    await waitFor(() => !a.mesh.isConnected('node-b') && !b.mesh.isConnected('node-a'), 2000, 'link down');
    expect(downs.sort()).toEqual(['a lost node-b', 'b lost node-a']);
    expect(a.logger.warnings().some((w) => String(w.obj['reason']).startsWith('peer silent'))).toBe(true);
    fb.allow();
    await waitFor(() => a.mesh.isConnected('node-b') && b.mesh.isConnected('node-a'), 3000, 'heal');
    expect(await b.mesh.request('node-a', 1, 1000)).toEqual({ a: 1 });
  });
});

describe('liveness', () => {
  it('closes a peer that completed the handshake and then went silent', async () => {
    const b = await startMesh('node-b');
    const downs: [PeerId, string][] = [];
    b.mesh.on('peer-down', (p, reason) => downs.push([p, reason]));
    const raw = await RawPeer.connect(b.info.address);
    await raw.handshake({ name: 'aaa-stopped', incarnation: 1 });
    await waitFor(() => b.mesh.isConnected('aaa-stopped'), 1000, 'raw peer open');
    // Like a SIGSTOPped process: the socket stays open, nothing is read or answered.
    raw.socket.pause();
    const t0 = Date.now();
    const pending = rejectionOf(b.mesh.request('aaa-stopped', 'are you there', 10_000));
    await waitFor(() => downs.length === 1, 2000, 'peer-down');
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(550);
    expect(elapsed).toBeLessThan(1200);
    expect(downs[0]![0]).toEqual({ name: 'aaa-stopped', incarnation: 1 });
    expect(downs[0]![1]).toMatch(/peer silent/);
    const err = await pending;
    expect(err).toBeInstanceOf(PeerUnreachable);
    expect((err as PeerUnreachable).maybeDelivered).toBe(true);
    raw.socket.resume(); // "SIGCONT": it now sees that b closed the connection
    expect(await raw.waitClosed(500)).toBe(true);
    expect(b.logger.warnings().some((w) => w.obj['remote'] === `127.0.0.1:${raw.localPort}`)).toBe(true);
  });

  it('a peer that answers pings stays connected while idle', async () => {
    const b = await startMesh('node-b');
    const raw = await RawPeer.connect(b.info.address);
    await raw.handshake({ name: 'aaa-live', incarnation: 1 });
    const answer = setInterval(() => {
      while (raw.frames.length > 0) {
        const f = raw.frames.shift();
        if (Array.isArray(f) && f[0] === 4) raw.writeValue([5]);
      }
    }, 20);
    try {
      await sleep(1200);
      expect(b.mesh.isConnected('aaa-live')).toBe(true);
    } finally {
      clearInterval(answer);
    }
  });

  it('does not blame peers for its own blocked event loop', async () => {
    const a = await startMesh('node-a');
    const b = await startMesh('node-b');
    await connectAll([a, b]);
    const downs: string[] = [];
    a.mesh.on('peer-down', (p) => downs.push(p.name));
    b.mesh.on('peer-down', (p) => downs.push(p.name));
    const until = Date.now() + 1000; // 5 ping intervals
    while (Date.now() < until) {
      // busy: the whole process is stalled, like a long GC pause
    }
    await sleep(500);
    expect(downs).toEqual([]);
    expect(a.mesh.isConnected('node-b')).toBe(true);
  });
});
