import { afterEach, describe, expect, it } from 'vitest';
import { ConcordError, HandlerError, Stopped, Timeout } from '../../src/errors.js';
import { PeerUnreachable } from '../../src/transport/errors.js';
import type { PeerId } from '../../src/transport/types.js';
import { closeAll, connectAll, rejectionOf, sleep, startMesh, waitFor } from './helpers.js';

afterEach(closeAll);

describe('Mesh', () => {
  it('exchanges requests both ways over the one connection the lower name dialed', async () => {
    const a = await startMesh('node-a');
    const b = await startMesh('node-b');
    a.mesh.onRequest((from, body) => ({ at: 'a', from: from.name, body }));
    b.mesh.onRequest(async (from, body) => ({ at: 'b', from: from.name, body }));
    const ups: PeerId[] = [];
    b.mesh.on('peer-up', (p) => ups.push(p));
    await connectAll([a, b]);

    expect(await a.mesh.request('node-b', 'ping', 1000)).toEqual({ at: 'b', from: 'node-a', body: 'ping' });
    expect(await b.mesh.request('node-a', { n: 1 }, 1000)).toEqual({ at: 'a', from: 'node-b', body: { n: 1 } });
    expect(ups).toEqual([{ name: 'node-a', incarnation: 1 }]);
    // node-a dialed, node-b accepted: the acceptor logs role 'acceptor'.
    expect(b.logger.entries.find((e) => e.msg === 'peer connected')?.obj['role']).toBe('acceptor');
    expect(a.logger.entries.find((e) => e.msg === 'peer connected')?.obj['role']).toBe('dialer');
    expect(a.logger.warnings()).toEqual([]);
    expect(b.logger.warnings()).toEqual([]);
  });

  it('a request waits for the connection to come up', async () => {
    const a = await startMesh('node-a');
    const b = await startMesh('node-b');
    b.mesh.onRequest((_from, body) => body);
    // The higher name learns about the lower one first: it cannot dial, it waits to be dialed.
    b.mesh.setPeers([a.info]);
    const pending = b.mesh.request('node-a', 'early', 3000);
    await sleep(50);
    a.mesh.onRequest((_from, body) => `a got ${String(body)}`);
    a.mesh.setPeers([b.info]);
    expect(await pending).toBe('a got early');
  });

  it('multiplexes 10,000 concurrent requests', async () => {
    const a = await startMesh('node-a');
    const b = await startMesh('node-b');
    b.mesh.onRequest((_from, body) => {
      const n = body as number;
      // Answer out of order: every third one asynchronously.
      return n % 3 === 0 ? new Promise((r) => setTimeout(() => r(n * 2), n % 7)) : n * 2;
    });
    a.mesh.onRequest((_from, body) => (body as number) + 1);
    await connectAll([a, b]);
    const n = 10_000;
    const fromA = Array.from({ length: n }, (_, i) => a.mesh.request('node-b', i, 10_000));
    const fromB = Array.from({ length: n }, (_, i) => b.mesh.request('node-a', i, 10_000));
    const [ra, rb] = await Promise.all([Promise.all(fromA), Promise.all(fromB)]);
    expect(ra).toEqual(Array.from({ length: n }, (_, i) => i * 2));
    expect(rb).toEqual(Array.from({ length: n }, (_, i) => i + 1));
  });

  it('sends error responses with their code, name, message and details', async () => {
    const a = await startMesh('node-a');
    const b = await startMesh('node-b');
    b.mesh.onRequest((_from, body) => {
      if (body === 'concord') throw new HandlerError('insufficient funds', { balance: 3 });
      if (body === 'plain') throw new TypeError('boom');
      if (body === 'async') return Promise.reject(new Timeout('inner deadline'));
      if (body === 'weird') throw 'a string';
      if (body === 'unencodable') return Symbol('nope');
      return 'ok';
    });
    await connectAll([a, b]);

    const e1 = await rejectionOf(a.mesh.request('node-b', 'concord', 1000));
    expect(e1).toBeInstanceOf(ConcordError);
    expect(e1).toMatchObject({ code: 'HANDLER_ERROR', name: 'HandlerError', message: 'insufficient funds' });
    expect((e1 as ConcordError).details).toEqual({ balance: 3 });

    const e2 = await rejectionOf(a.mesh.request('node-b', 'plain', 1000));
    expect(e2).toMatchObject({ code: 'HANDLER_ERROR', name: 'TypeError', message: 'boom' });

    const e3 = await rejectionOf(a.mesh.request('node-b', 'async', 1000));
    expect(e3).toBeInstanceOf(Timeout);
    expect(e3.message).toBe('inner deadline');

    const e4 = await rejectionOf(a.mesh.request('node-b', 'weird', 1000));
    expect(e4).toMatchObject({ code: 'HANDLER_ERROR', message: 'a string' });

    const e5 = await rejectionOf(a.mesh.request('node-b', 'unencodable', 1000));
    expect(e5).toMatchObject({ code: 'BAD_MESSAGE' });

    // The connection is still fine afterwards.
    expect(await a.mesh.request('node-b', 'x', 1000)).toBe('ok');
  });

  it('a node without a request handler answers UNAVAILABLE', async () => {
    const a = await startMesh('node-a');
    const b = await startMesh('node-b');
    await connectAll([a, b]);
    const err = await rejectionOf(a.mesh.request('node-b', 1, 1000));
    expect(err).toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('rejects with Timeout when the answer does not come in time, and ignores the late answer', async () => {
    const a = await startMesh('node-a');
    const b = await startMesh('node-b');
    b.mesh.onRequest((_from, body) => new Promise((r) => setTimeout(() => r(body), body as number)));
    await connectAll([a, b]);
    const started = Date.now();
    const err = await rejectionOf(a.mesh.request('node-b', 300, 100));
    expect(err).toBeInstanceOf(Timeout);
    expect(err).toMatchObject({ code: 'TIMEOUT' });
    expect(Date.now() - started).toBeLessThan(280);
    await sleep(300); // the late answer arrives and is dropped
    expect(await a.mesh.request('node-b', 1, 1000)).toBe(1);
  });

  it('rejects at once with PeerUnreachable for a peer that is neither connected nor listed', async () => {
    const a = await startMesh('node-a');
    const err = await rejectionOf(a.mesh.request('nobody', 1, 5000));
    expect(err).toBeInstanceOf(PeerUnreachable);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', peer: 'nobody', maybeDelivered: false });
    expect(a.mesh.send('nobody', 1)).toBe(false);
  });

  it('rejects with PeerUnreachable when a listed peer cannot be reached within the timeout', async () => {
    const a = await startMesh('node-a');
    a.mesh.setPeers([{ name: 'node-z', incarnation: 1, address: '127.0.0.1:1' }]);
    const err = await rejectionOf(a.mesh.request('node-z', 1, 150));
    expect(err).toBeInstanceOf(PeerUnreachable);
    expect((err as PeerUnreachable).maybeDelivered).toBe(false);
  });

  it('rejects a waiting request when the peer leaves the set', async () => {
    const a = await startMesh('node-a');
    a.mesh.setPeers([{ name: 'node-z', incarnation: 1, address: '127.0.0.1:1' }]);
    const pending = rejectionOf(a.mesh.request('node-z', 1, 5000));
    a.mesh.setPeers([]);
    const err = await pending;
    expect(err).toBeInstanceOf(PeerUnreachable);
  });

  it('a peer that leaves the set still answers the requests already written to it; nothing new is sent there', async () => {
    const a = await startMesh('node-a');
    const b = await startMesh('node-b');
    // b answers after 200 ms, as a node that has stopped serving answers "moved".
    b.mesh.onRequest((_from, body) => new Promise((r) => setTimeout(() => r({ answered: body }), 200)));
    await connectAll([a, b]);
    const downs: string[] = [];
    a.mesh.on('peer-down', (_p, reason) => downs.push(reason));
    const inFlight = a.mesh.request('node-b', 'written before', 5000);
    await sleep(20);
    a.mesh.setPeers([]);
    // No longer connected for anything new: a new request is refused at once, not delivered.
    expect(a.mesh.isConnected('node-b')).toBe(false);
    expect(downs).toEqual(['peer left the peer set']);
    const refused = await rejectionOf(a.mesh.request('node-b', 'after', 5000));
    expect(refused).toBeInstanceOf(PeerUnreachable);
    expect((refused as PeerUnreachable).maybeDelivered).toBe(false);
    // The request written before gets b's own answer, not "may or may not have been delivered".
    expect(await inFlight).toEqual({ answered: 'written before' });
    // Then the connection closes by itself: b sees a leave.
    await waitFor(() => !b.mesh.isConnected('node-a'), 2000, 'b to see the connection close');
    expect(downs).toEqual(['peer left the peer set']);
  });

  it('a peer that left the set and does not answer: its requests are rejected as maybe delivered after the grace', async () => {
    const a = await startMesh('node-a');
    const b = await startMesh('node-b');
    b.mesh.onRequest(() => new Promise(() => {}));
    await connectAll([a, b]);
    const pending = rejectionOf(a.mesh.request('node-b', 1, 10_000));
    await sleep(20);
    const leftAt = performance.now();
    a.mesh.setPeers([]);
    const err = await pending;
    const waited = performance.now() - leftAt;
    expect(err).toBeInstanceOf(PeerUnreachable);
    expect((err as PeerUnreachable).maybeDelivered).toBe(true);
    expect(String((err as Error).message)).toContain('peer left the peer set');
    // The grace (1 s), not the request's own 10 s.
    expect(waited).toBeGreaterThan(800);
    expect(waited).toBeLessThan(3000);
    await waitFor(() => !b.mesh.isConnected('node-a'), 2000, 'b to see the connection close');
  });

  it('rejects requests in flight when the connection drops (maybeDelivered) and emits peer-down', async () => {
    const a = await startMesh('node-a');
    const b = await startMesh('node-b');
    b.mesh.onRequest(() => new Promise(() => {}));
    await connectAll([a, b]);
    const downs: [PeerId, string][] = [];
    a.mesh.on('peer-down', (p, reason) => downs.push([p, reason]));
    const pending = rejectionOf(a.mesh.request('node-b', 1, 5000));
    await sleep(50);
    await b.mesh.close();
    const err = await pending;
    expect(err).toBeInstanceOf(PeerUnreachable);
    expect((err as PeerUnreachable).maybeDelivered).toBe(true);
    await waitFor(() => downs.length === 1, 2000, 'peer-down');
    expect(downs[0]![0]).toEqual({ name: 'node-b', incarnation: 1 });
    expect(a.mesh.isConnected('node-b')).toBe(false);
  });

  it('keeps fire-and-forget messages in order, both directions', async () => {
    const a = await startMesh('node-a');
    const b = await startMesh('node-b');
    const atB: unknown[] = [];
    const atA: unknown[] = [];
    b.mesh.onMessage((from, body) => {
      expect(from.name).toBe('node-a');
      atB.push(body);
    });
    a.mesh.onMessage((_from, body) => atA.push(body));
    await connectAll([a, b]);
    const n = 20_000;
    for (let i = 0; i < n; i++) {
      expect(a.mesh.send('node-b', i)).toBe(true);
      b.mesh.send('node-a', { i });
      // Spread over several event-loop turns so that several coalesced writes are involved.
      if (i % 1000 === 0) await sleep(0);
    }
    await waitFor(() => atB.length === n && atA.length === n, 5000, 'all messages');
    expect(atB).toEqual(Array.from({ length: n }, (_, i) => i));
    expect(atA).toEqual(Array.from({ length: n }, (_, i) => ({ i })));
  });

  it('a throwing message handler is logged, not fatal', async () => {
    const a = await startMesh('node-a');
    const b = await startMesh('node-b');
    let seen = 0;
    b.mesh.onMessage(() => {
      seen++;
      throw new Error('handler bug');
    });
    b.mesh.onRequest(() => 'still here');
    await connectAll([a, b]);
    a.mesh.send('node-b', 1);
    a.mesh.send('node-b', 2);
    await waitFor(() => seen === 2, 2000, 'messages');
    expect(await a.mesh.request('node-b', 0, 1000)).toBe('still here');
    expect(b.logger.warnings().map((w) => w.msg)).toEqual(['peer message handler threw', 'peer message handler threw']);
  });

  it('refuses bodies above the frame limit locally instead of breaking the connection', async () => {
    const a = await startMesh('node-a', 1, { maxFrameBytes: 64 * 1024 });
    const b = await startMesh('node-b', 1, { maxFrameBytes: 64 * 1024 });
    b.mesh.onRequest((_from, body) => (body === 'big' ? 'y'.repeat(100_000) : body));
    await connectAll([a, b]);
    const big = 'x'.repeat(100_000);
    expect(await rejectionOf(a.mesh.request('node-b', big, 1000))).toMatchObject({ code: 'BAD_MESSAGE' });
    expect(() => a.mesh.send('node-b', big)).toThrow(ConcordError);
    expect(await rejectionOf(a.mesh.request('node-b', 'big', 1000))).toMatchObject({ code: 'BAD_MESSAGE' });
    expect(await a.mesh.request('node-b', 'small', 1000)).toBe('small');
    expect(a.mesh.isConnected('node-b')).toBe(true);
  });

  it('reconnects to a restarted peer with a new incarnation (on the same port and on a new one)', async () => {
    const a = await startMesh('node-a');
    let b = await startMesh('node-b');
    const c = await startMesh('node-0'); // sorts lower than node-a: it dials a
    for (const m of [a, b, c]) m.mesh.onRequest((_f, body) => `${m.info.name}/${m.info.incarnation}:${String(body)}`);
    await connectAll([a, b, c]);
    const downs: string[] = [];
    const ups: string[] = [];
    a.mesh.on('peer-down', (p) => downs.push(`${p.name}/${p.incarnation}`));
    a.mesh.on('peer-up', (p) => ups.push(`${p.name}/${p.incarnation}`));

    // Restart b on the same port with incarnation 2; a keeps dialing the listed address.
    const port = Number(b.info.address.split(':')[1]);
    await b.mesh.close();
    b = await startMesh('node-b', 2, {}, port);
    b.mesh.onRequest((_f, body) => `node-b/2:${String(body)}`);
    await waitFor(() => a.mesh.isConnected('node-b'), 3000, 'a to reconnect to b/2');
    expect(await a.mesh.request('node-b', 'hi', 1000)).toBe('node-b/2:hi');
    // b/2 must be told about a/1 to be able to call it? No: it accepts the lower name's dial.
    expect(await b.mesh.request('node-a', 'back', 1000)).toBe('node-a/1:back');
    a.mesh.setPeers([a.info, b.info, c.info]);
    expect(a.mesh.isConnected('node-b')).toBe(true);

    // Restart c (the dialer side of the a–c pair) on a new port with incarnation 5.
    await c.mesh.close();
    const c2 = await startMesh('node-0', 5);
    c2.mesh.onRequest((_f, body) => `node-0/5:${String(body)}`);
    c2.mesh.setPeers([a.info, b.info]);
    await waitFor(() => a.mesh.isConnected('node-0'), 3000, 'c/5 to dial a');
    expect(await a.mesh.request('node-0', 'x', 1000)).toBe('node-0/5:x');
    a.mesh.setPeers([a.info, b.info, c2.info]);
    expect(a.mesh.isConnected('node-0')).toBe(true);

    expect(downs).toEqual(['node-b/1', 'node-0/1']);
    expect(ups).toEqual(['node-b/2', 'node-0/5']);
  });

  it('setSelfIncarnation re-establishes connections under the new identity', async () => {
    // Like the runtime: listen first (the address goes into the membership row), learn the
    // incarnation from the store afterwards.
    const a = await startMesh('node-a', 0);
    const b = await startMesh('node-b', 0);
    a.mesh.setSelfIncarnation(3);
    b.mesh.setSelfIncarnation(4);
    a.info.incarnation = 3;
    b.info.incarnation = 4;
    a.mesh.onRequest((from) => `a/${a.mesh.self.incarnation} sees ${from.name}/${from.incarnation}`);
    b.mesh.onRequest((from) => `b/${b.mesh.self.incarnation} sees ${from.name}/${from.incarnation}`);
    await connectAll([a, b]);
    expect(await b.mesh.request('node-a', 0, 1000)).toBe('a/3 sees node-b/4');

    const events: string[] = [];
    b.mesh.on('peer-down', (p) => events.push(`down ${p.name}/${p.incarnation}`));
    b.mesh.on('peer-up', (p) => events.push(`up ${p.name}/${p.incarnation}`));
    a.mesh.setSelfIncarnation(7); // b still lists node-a/3: the newer incarnation is admitted
    await waitFor(() => events.length === 2, 3000, 'reconnect as a/7');
    expect(events).toEqual(['down node-a/3', 'up node-a/7']);
    expect(await b.mesh.request('node-a', 0, 1000)).toBe('a/7 sees node-b/4');
    expect(await a.mesh.request('node-b', 0, 1000)).toBe('b/4 sees node-a/7');
    expect(() => a.mesh.setSelfIncarnation(-1)).toThrow(TypeError);
  });

  it('closes connections to peers that leave the set or are superseded, and refuses stale incarnations', async () => {
    const a = await startMesh('node-a');
    const b = await startMesh('node-b');
    await connectAll([a, b]);
    // b learns that node-a is now incarnation 2: the connection to node-a/1 is stale.
    b.mesh.setPeers([{ ...a.info, incarnation: 2 }]);
    expect(b.mesh.isConnected('node-a')).toBe(false);
    // a (still incarnation 1) re-dials and is refused as stale.
    await waitFor(
      () => b.logger.warnings().some((w) => String(w.obj['reason']).includes('stale incarnation 1')),
      3000,
      'stale dial to be refused',
    );
    expect(b.mesh.isConnected('node-a')).toBe(false);
    // Back to the truth: the connection comes back.
    b.mesh.setPeers([a.info]);
    await waitFor(() => b.mesh.isConnected('node-a'), 3000, 'reconnect');
    // a leaves b's set entirely.
    b.mesh.setPeers([]);
    expect(b.mesh.isConnected('node-a')).toBe(false);
  });

  it('close() rejects waiting requests with Stopped, sent ones as maybe delivered, and is idempotent', async () => {
    const a = await startMesh('node-a');
    const b = await startMesh('node-b');
    b.mesh.onRequest(() => new Promise(() => {}));
    await connectAll([a, b]);
    a.mesh.setPeers([b.info, { name: 'node-z', incarnation: 1, address: '127.0.0.1:1' }]);
    const inFlight = rejectionOf(a.mesh.request('node-b', 1, 5000));
    const waiting = rejectionOf(a.mesh.request('node-z', 1, 5000));
    await sleep(20);
    await Promise.all([a.mesh.close(), a.mesh.close()]);
    // Already written: the peer may have acted on it, so it is not a plain "stopped".
    const sent = await inFlight;
    expect(sent).toBeInstanceOf(PeerUnreachable);
    expect((sent as PeerUnreachable).maybeDelivered).toBe(true);
    expect(await waiting).toBeInstanceOf(Stopped);
    expect(await rejectionOf(a.mesh.request('node-b', 1, 100))).toBeInstanceOf(Stopped);
    expect(a.mesh.send('node-b', 1)).toBe(false);
    await waitFor(() => !b.mesh.isConnected('node-a'), 2000, 'b to see a go');
  });
});

describe('Mesh.drain (graceful leave)', () => {
  it('answers every request the peer sent before it learned of the leave, then the peer sends no more', async () => {
    const a = await startMesh('node-a');
    const b = await startMesh('node-b');
    // A slow handler: requests are still being served when the drain starts.
    a.mesh.onRequest(async (_from, body) => {
      await sleep(30);
      return body;
    });
    b.mesh.onRequest((_from, body) => body);
    const downs: string[] = [];
    b.mesh.on('peer-down', (p, reason) => downs.push(`${p.name}: ${reason}`));
    await connectAll([a, b]);

    const inFlight = Array.from({ length: 50 }, (_, i) => b.mesh.request('node-a', i, 5000));
    await sleep(5);
    await a.mesh.drain(2000);
    expect(b.mesh.isConnected('node-a')).toBe(false);
    await a.mesh.close();
    // Every request was answered before the close: none failed with "closed while waiting".
    expect(await Promise.all(inFlight)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(downs).toEqual(['node-a: peer is leaving']);
    const after = await rejectionOf(b.mesh.request('node-a', 'late', 300));
    // Refused before sending: certainly not delivered, so a caller may retry elsewhere.
    expect(after).toBeInstanceOf(PeerUnreachable);
    expect((after as PeerUnreachable).maybeDelivered).toBe(false);
    expect(a.logger.warnings()).toEqual([]);
  });
});
