/**
 * Peers that are not (or not quite) concord nodes: each must be disconnected and logged, and
 * the node must keep serving its real peer afterwards.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createPackr, encodeFrame } from '../../src/transport/frame.js';
import { PROTOCOL_VERSION } from '../../src/transport/handshake.js';
import type { PeerId } from '../../src/transport/types.js';
import { closeAll, connectAll, RawPeer, rejectionOf, SECRET, startMesh, type TestMesh, waitFor } from './helpers.js';

let a: TestMesh;
let b: TestMesh;

beforeEach(async () => {
  a = await startMesh('node-a');
  b = await startMesh('node-b');
  a.mesh.onRequest((_from, body) => ({ a: body }));
  b.mesh.onRequest((_from, body) => ({ b: body }));
  await connectAll([a, b]);
});

afterEach(closeAll);

async function stillServing(): Promise<void> {
  expect(await a.mesh.request('node-b', 1, 1000)).toEqual({ b: 1 });
  expect(await b.mesh.request('node-a', 2, 1000)).toEqual({ a: 2 });
  expect(a.mesh.isConnected('node-b')).toBe(true);
}

/** The warning b logged about `raw`, identified by its source port. */
function warningFor(raw: RawPeer): Record<string, unknown> | undefined {
  const remote = `127.0.0.1:${raw.localPort}`;
  return b.logger.warnings().find((w) => w.obj['remote'] === remote)?.obj;
}

function hello(name: string, extra: Record<string, unknown> = {}): object {
  return {
    t: 'hello',
    v: PROTOCOL_VERSION,
    name,
    inc: 1,
    nonce: randomBytes(32),
    maxFrame: 1 << 20,
    ...extra,
  };
}

describe('hostile or broken peers', () => {
  it('a dialer that does not know the secret is refused', async () => {
    const raw = await RawPeer.connect(b.info.address);
    raw.writeValue(hello('aaa-raw'));
    const challenge = (await raw.nextFrame()) as Record<string, unknown>;
    expect(challenge['t']).toBe('challenge');
    raw.writeValue({ t: 'auth', proof: randomBytes(32) });
    expect(await raw.waitClosed(1000)).toBe(true);
    expect(warningFor(raw)?.['reason']).toMatch(/authentication failed/);
    await stillServing();
  });

  it('a node with the wrong secret cannot join in either direction', async () => {
    // As the dialer: the acceptor's proof does not verify on the intruder's side.
    const raw = await RawPeer.connect(b.info.address);
    await expect(raw.handshake({ name: 'aaa-raw', incarnation: 1 }, 'wrong-secret')).rejects.toThrow(
      /authentication failed/,
    );
    raw.destroy();

    // A whole mesh with the wrong secret, dialing b and being dialed by... nobody: it sorts lower.
    const intruder = await startMesh('node-0', 1, { secret: 'wrong-secret' });
    intruder.mesh.setPeers([b.info]);
    await waitFor(() => intruder.logger.warnings().length >= 2, 3000, 'intruder to fail twice');
    expect(intruder.mesh.isConnected('node-b')).toBe(false);
    expect(b.mesh.isConnected('node-0')).toBe(false);
    // Both sides count the failed handshakes: the intruder its refusals of b's proof, b the
    // intruder hanging up on it mid-handshake.
    expect(intruder.mesh.stats.handshakeFailures).toBeGreaterThanOrEqual(2);
    await waitFor(() => b.mesh.stats.handshakeFailures >= 3, 3000, 'b to count the failures');
    await stillServing();
  });

  it('a mesh with a previous secret connects to peers that hold either secret (a rotation)', async () => {
    const NEW = 'the-new-secret-of-the-test-cluster';
    // node-0 holds the new secret and the old one (SECRET, that of a and b); node-z only the new one.
    const rotating = await startMesh('node-0', 1, { secret: NEW, previousSecret: SECRET });
    const newOnly = await startMesh('node-z', 1, { secret: NEW });
    rotating.mesh.setPeers([a.info, b.info, newOnly.info]);
    newOnly.mesh.setPeers([rotating.info, a.info]);
    await waitFor(
      () => ['node-a', 'node-b', 'node-z'].every((n) => rotating.mesh.isConnected(n)),
      3000,
      'the rotating node to reach all three',
    );
    // The old-secret and the new-secret-only nodes share no secret: never connected.
    a.mesh.setPeers([b.info, rotating.info, newOnly.info]);
    await waitFor(() => a.mesh.stats.handshakeFailures >= 1, 3000, 'node-a to fail with node-z');
    expect(a.mesh.isConnected('node-z')).toBe(false);
    expect(rotating.mesh.stats.handshakeFailures).toBe(0);
    await stillServing();
  });

  it('garbage bytes are disconnected at once', async () => {
    const http = await RawPeer.connect(b.info.address);
    http.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    expect(await http.waitClosed(300)).toBe(true);
    expect(warningFor(http)?.['reason']).toMatch(/exceeds the limit of 4096/);

    const junk = await RawPeer.connect(b.info.address);
    junk.write(Buffer.from([0, 0, 0, 3, 0xdd, 0xff, 0xff]));
    expect(await junk.waitClosed(300)).toBe(true);
    expect(warningFor(junk)?.['reason']).toMatch(/invalid frame body: truncated/);

    const wrongShape = await RawPeer.connect(b.info.address);
    wrongShape.writeValue([0, 1, 'not a hello']);
    expect(await wrongShape.waitClosed(300)).toBe(true);

    const badHello = await RawPeer.connect(b.info.address);
    badHello.writeValue(hello('aaa-raw', { nonce: 'short' }));
    expect(await badHello.waitClosed(300)).toBe(true);
    expect(warningFor(badHello)?.['reason']).toBe('bad nonce');

    const oldVersion = await RawPeer.connect(b.info.address);
    oldVersion.writeValue(hello('aaa-raw', { v: 0 }));
    expect(await oldVersion.waitClosed(300)).toBe(true);
    expect(warningFor(oldVersion)?.['reason']).toMatch(/protocol version/);

    const random = await RawPeer.connect(b.info.address);
    random.write(randomBytes(10_000));
    expect(await random.waitClosed(300)).toBe(true);
    await stillServing();
  });

  it('an oversized frame before authentication is refused on its length alone', async () => {
    const raw = await RawPeer.connect(b.info.address);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(4097, 0);
    raw.write(header); // no body at all: the header is enough
    expect(await raw.waitClosed(300)).toBe(true);
    expect(warningFor(raw)?.['reason']).toMatch(/4097 exceeds the limit of 4096/);
    await stillServing();
  });

  it('a handshake that never completes times out', async () => {
    const silent = await RawPeer.connect(b.info.address);
    const halfway = await RawPeer.connect(b.info.address);
    halfway.writeValue(hello('aaa-raw'));
    expect(await halfway.nextFrame()).toMatchObject({ t: 'challenge' });
    // handshakeTimeoutMs is 500 in the tests.
    const t0 = Date.now();
    expect(await silent.waitClosed(2000)).toBe(true);
    expect(await halfway.waitClosed(2000)).toBe(true);
    expect(Date.now() - t0).toBeLessThan(1500);
    expect(warningFor(silent)?.['reason']).toBe('handshake timed out');
    expect(warningFor(halfway)?.['reason']).toBe('handshake timed out');
    await stillServing();
  });

  it('refuses a dial from a name that sorts higher, and a peer claiming our own name', async () => {
    const upper = await RawPeer.connect(b.info.address);
    await expect(upper.handshake({ name: 'zzz', incarnation: 1 })).rejects.toThrow();
    expect(warningFor(upper)?.['reason']).toMatch(/lower name dials/);
    const twin = await RawPeer.connect(b.info.address);
    await expect(twin.handshake({ name: 'node-b', incarnation: 9 })).rejects.toThrow();
    await stillServing();
  });

  it('an authenticated peer sending a malformed or oversized frame is disconnected', async () => {
    const downs: [PeerId, string][] = [];
    b.mesh.on('peer-down', (p, reason) => downs.push([p, reason]));

    const raw = await RawPeer.connect(b.info.address);
    expect(await raw.handshake({ name: 'aaa-raw', incarnation: 1 })).toEqual({ name: 'node-b', incarnation: 1 });
    await waitFor(() => b.mesh.isConnected('aaa-raw'), 1000, 'raw peer to be open');
    // A well-formed request works...
    raw.writeValue([0, 7, 'hello']);
    expect(await raw.nextFrame()).toEqual([1, 7, { b: 'hello' }]);
    // ...an unknown message type does not.
    raw.writeValue([42, 'what']);
    expect(await raw.waitClosed(500)).toBe(true);
    expect(downs.map(([p]) => p.name)).toEqual(['aaa-raw']);
    expect(downs[0]![1]).toMatch(/unknown or malformed message/);

    const big = await RawPeer.connect(b.info.address);
    await big.handshake({ name: 'aaa-raw', incarnation: 2 });
    const header = Buffer.alloc(4);
    header.writeUInt32BE(17 * 1024 * 1024, 0);
    big.write(header);
    expect(await big.waitClosed(500)).toBe(true);
    expect(warningFor(big)?.['reason']).toMatch(/exceeds the limit of 16777216/);

    const badId = await RawPeer.connect(b.info.address);
    await badId.handshake({ name: 'aaa-raw', incarnation: 3 });
    badId.write(encodeFrame(createPackr(), [0, -1, 'x'], 1 << 20));
    expect(await badId.waitClosed(500)).toBe(true);
    // Each of the three was counted, and the node keeps serving its real peer.
    expect(b.mesh.stats.protocolErrors).toBe(3);
    await stillServing();
  });

  it('drops unauthenticated connections beyond the pending-handshake limit', async () => {
    const c = await startMesh('node-c', 1, { maxPendingHandshakes: 4 });
    c.mesh.onRequest(() => 'c');
    const raws = await Promise.all(Array.from({ length: 8 }, () => RawPeer.connect(c.info.address)));
    await waitFor(() => raws.filter((r) => r.closed).length === 4, 1000, 'the extra four to be dropped');
    expect(c.logger.warnings().filter((w) => w.msg.includes('too many')).length).toBe(4);
    await waitFor(() => raws.every((r) => r.closed), 2000, 'the rest to time out');
    // Once they are gone, real peers get in.
    await connectAll([a, b, c]);
    expect(await a.mesh.request('node-c', 0, 1000)).toBe('c');
  });

  it('a request body that cannot be encoded fails locally', async () => {
    const err = await rejectionOf(a.mesh.request('node-b', { s: Symbol('x') }, 1000));
    expect(err).toMatchObject({ code: 'BAD_MESSAGE' });
    await stillServing();
  });
});
