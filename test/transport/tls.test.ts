/**
 * Mutual TLS on the peer transport (src/transport/tls.ts), mesh against mesh: certificates from
 * the cluster CA connect; another CA's, none, plain TCP and garbage are refused, counted and
 * logged while the real peers keep serving; a byte flipped on the path breaks only that
 * connection, which comes back.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeCerts } from '../../src/cli/certs.js';
import { type MeshTlsOptions, TlsConfigError } from '../../src/transport/tls.js';
import { TamperingProxy } from '../support/proxies.js';
import { tempDir } from '../support/tmp.js';
import { closeAll, connectAll, RawPeer, startMesh, type TestMesh, waitFor } from './helpers.js';

let files: Record<string, MeshTlsOptions>;
let otherCa: MeshTlsOptions;

function load(dir: string, name: string): MeshTlsOptions {
  return {
    cert: readFileSync(join(dir, `${name}.crt`)),
    key: readFileSync(join(dir, `${name}.key`)),
    ca: readFileSync(join(dir, 'ca.crt')),
  };
}

beforeAll(async () => {
  const dir = tempDir('certs-');
  await makeCerts({ dir, nodes: ['node-a', 'node-b', 'node-c'] });
  files = Object.fromEntries(['node-a', 'node-b', 'node-c'].map((n) => [n, load(dir, n)]));
  const other = tempDir('other-ca-');
  await makeCerts({ dir: other, nodes: ['node-0'] });
  otherCa = load(other, 'node-0');
});

afterEach(closeAll);

async function tlsPair(): Promise<[TestMesh, TestMesh]> {
  const a = await startMesh('node-a', 1, { tls: files['node-a']! });
  const b = await startMesh('node-b', 1, { tls: files['node-b']! });
  a.mesh.onRequest((_from, body) => ({ a: body }));
  b.mesh.onRequest((_from, body) => ({ b: body }));
  await connectAll([a, b]);
  return [a, b];
}

async function stillServing(a: TestMesh, b: TestMesh): Promise<void> {
  expect(await a.mesh.request('node-b', 1, 2000)).toEqual({ b: 1 });
  expect(await b.mesh.request('node-a', 2, 2000)).toEqual({ a: 2 });
}

describe('peer transport over mutual TLS', () => {
  it('nodes with certificates of the cluster CA connect, and log the peer certificate', async () => {
    const [a, b] = await tlsPair();
    await stillServing(a, b);
    const connected = b.logger.entries.find((e) => e.msg === 'peer connected');
    expect(connected?.obj['certificate']).toMatchObject({ subject: 'node-a' });
    expect(a.mesh.stats.handshakeFailures + b.mesh.stats.handshakeFailures).toBe(0);
  });

  it('refuses a node whose certificate comes from another CA, in either direction', async () => {
    const [a, b] = await tlsPair();
    // node-0 sorts lower: it dials node-b, which refuses its certificate...
    const intruder = await startMesh('node-0', 1, { tls: otherCa });
    intruder.mesh.setPeers([b.info]);
    await waitFor(() => b.mesh.stats.handshakeFailures >= 2, 5000, 'node-b to refuse twice');
    expect(b.mesh.isConnected('node-0')).toBe(false);
    expect(b.logger.warnings().some((w) => w.msg === 'peer TLS handshake failed; disconnecting')).toBe(true);
    // ...and node-b's certificate is refused by the intruder's CA when node-b is dialed by it.
    await waitFor(() => intruder.mesh.stats.handshakeFailures >= 1, 5000, 'the intruder to refuse node-b');
    // A node with the cluster's CA but no secret in common still fails (at the secret handshake).
    const noSecret = await startMesh('node-1', 1, { tls: files['node-c']!, secret: 'some-other-secret' });
    noSecret.mesh.setPeers([b.info]);
    await waitFor(() => noSecret.mesh.stats.handshakeFailures >= 1, 5000, 'the secret to be refused');
    expect(b.mesh.isConnected('node-1')).toBe(false);
    await stillServing(a, b);
  });

  it('refuses a node without TLS, and plain-TCP garbage on the TLS port', async () => {
    const [a, b] = await tlsPair();
    const plain = await startMesh('node-0', 1);
    plain.mesh.setPeers([b.info]);
    await waitFor(() => b.mesh.stats.handshakeFailures >= 1, 5000, 'node-b to refuse the plain dialer');
    expect(b.mesh.isConnected('node-0')).toBe(false);

    const before = b.mesh.stats.handshakeFailures;
    for (const bytes of [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), Buffer.from([0, 0, 0, 5, 1, 2, 3, 4, 5])]) {
      const raw = await RawPeer.connect(b.info.address);
      raw.write(bytes);
      expect(await raw.waitClosed(2000)).toBe(true);
    }
    // A concord frame (a plain HELLO) is garbage too: TLS comes first.
    const hello = await RawPeer.connect(b.info.address);
    hello.writeValue({ t: 'hello', v: 1, name: 'aaa', inc: 1, nonce: Buffer.alloc(32), maxFrame: 1 << 20 });
    expect(await hello.waitClosed(2000)).toBe(true);
    await waitFor(() => b.mesh.stats.handshakeFailures >= before + 3, 2000, 'the three to be counted');
    // The plain mesh cannot be dialed by a TLS one either.
    const c = await startMesh('node-c', 1, { tls: files['node-c']! });
    const zzz = await startMesh('node-z', 1);
    c.mesh.setPeers([zzz.info]);
    await waitFor(() => c.mesh.stats.handshakeFailures >= 1, 5000, 'the TLS dialer to fail on a plain acceptor');
    expect(c.mesh.isConnected('node-z')).toBe(false);
    await stillServing(a, b);
  });

  it('counts connections still in their TLS handshake against the pending-handshake limit', async () => {
    const c = await startMesh('node-c', 1, { tls: files['node-c']!, maxPendingHandshakes: 4 });
    const raws = await Promise.all(Array.from({ length: 8 }, () => RawPeer.connect(c.info.address)));
    await waitFor(() => raws.filter((r) => r.closed).length === 4, 2000, 'the extra four to be dropped');
    expect(c.logger.warnings().filter((w) => w.msg.includes('too many')).length).toBe(4);
    await waitFor(() => raws.every((r) => r.closed), 3000, 'the rest to time out');
    const [a, b] = await tlsPair();
    await stillServing(a, b);
  });

  it('refuses to start with a key that is not the certificate’s, or a certificate the CA did not sign', async () => {
    const a = files['node-a']!;
    await expect(startMesh('node-a', 1, { tls: { ...a, key: files['node-b']!.key } })).rejects.toThrow(TlsConfigError);
    await expect(startMesh('node-a', 1, { tls: { ...a, ca: otherCa.ca } })).rejects.toThrow(
      /not signed by the cluster CA/,
    );
    await expect(startMesh('node-a', 1, { tls: { ...a, cert: 'not a certificate' } })).rejects.toThrow(
      /no PEM certificate/,
    );
  });

  it('a byte flipped on the path breaks only that connection, which reconnects', async () => {
    const b = await startMesh('node-b', 1, { tls: files['node-b']! });
    b.mesh.onRequest((_from, body) => ({ b: body }));
    const c = await startMesh('node-c', 1, { tls: files['node-c']! });
    c.mesh.onRequest((_from, body) => ({ c: body }));
    const proxy = await TamperingProxy.start(b.info.address);
    const a = await startMesh('node-a', 1, { tls: files['node-a']! });
    a.mesh.onRequest((_from, body) => ({ a: body }));
    // node-a dials node-b through the proxy (node-b "lives" at the proxy's address for node-a).
    const viaProxy = { ...b.info, address: `127.0.0.1:${proxy.port}` };
    a.mesh.setPeers([a.info, viaProxy, c.info]);
    b.mesh.setPeers([a.info, b.info, c.info]);
    c.mesh.setPeers([a.info, b.info, c.info]);
    await waitFor(
      () => a.mesh.isConnected('node-b') && a.mesh.isConnected('node-c') && b.mesh.isConnected('node-c'),
      5000,
      'the three to connect',
    );
    const downs: string[] = [];
    a.mesh.on('peer-down', (peer, reason) => downs.push(`${peer.name}: ${reason}`));
    expect(await a.mesh.request('node-b', 'before', 2000)).toEqual({ b: 'before' });

    proxy.flipNext(); // one byte of the next chunk from node-a to node-b
    const during = await Promise.allSettled([a.mesh.request('node-b', 'flipped', 2000)]);
    // The changed record is refused by node-b's TLS, which drops the connection: the request in
    // it is never answered (its caller learns the outcome is unknown), nothing garbled is acted on.
    expect(during[0]!.status).toBe('rejected');
    await waitFor(() => downs.length >= 1, 3000, 'the broken connection to close');
    expect(downs[0]).toMatch(/^node-b: /);
    await waitFor(() => a.mesh.isConnected('node-b'), 5000, 'node-a to dial node-b again');
    expect(proxy.connections).toBe(2);
    expect(await a.mesh.request('node-b', 'after', 2000)).toEqual({ b: 'after' });
    // Only that link broke.
    expect(downs.filter((d) => d.startsWith('node-c'))).toEqual([]);
    expect(await a.mesh.request('node-c', 'c', 2000)).toEqual({ c: 'c' });
    const tlsWarning = b.logger.warnings().find((w) => String(w.obj['reason']).startsWith('TLS:'));
    expect(tlsWarning?.obj['reason']).toMatch(/decrypt|bad record mac|BAD_RECORD/i);
    await proxy.close();
  });
});
