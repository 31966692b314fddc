/**
 * Peers on the same host link over a Unix socket (local-socket.ts): real meshes in this
 * process, over real sockets. The link is checked by what carries it, its fallbacks by a missing
 * socket, a stale one and a wrong node at the path, and the directory's trust rules on a
 * directory of the test's own.
 */

import { execFileSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, renameSync, symlinkSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FaultSwitch } from '../../src/transport/faults.js';
import {
  isThisHost,
  localSocketDir,
  localSocketPath,
  ownAddresses,
  usableSocketDir,
} from '../../src/transport/local-socket.js';
import { tempDir } from '../support/tmp.js';
import { closeAll, connectAll, sleep, startMesh, waitFor } from './helpers.js';

afterEach(closeAll);

const dir = localSocketDir()!;

function socketOf(port: string): string {
  return localSocketPath(dir, Number(port))!;
}

/** A socket file whose process died without closing it (as after kill -9). */
async function leaveStaleSocket(path: string): Promise<void> {
  const script = `require('node:net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`;
  try {
    execFileSync(process.execPath, ['-e', script], { stdio: 'ignore' });
  } catch {
    // Killed, as meant.
  }
}

function portOf(address: string): string {
  return address.slice(address.lastIndexOf(':') + 1);
}

describe('links between peers on this host', () => {
  it('go over a Unix socket by default: 0600 in a 0700 directory, removed when the mesh closes', async () => {
    const a = await startMesh('node-a');
    const b = await startMesh('node-b');
    b.mesh.onRequest((from, body) => ({ from: from.name, body }));
    a.mesh.onRequest((_from, body) => body);
    await connectAll([a, b]);
    expect(a.mesh.linkKind('node-b')).toBe('unix');
    expect(b.mesh.linkKind('node-a')).toBe('unix');
    expect(await a.mesh.request('node-b', 'over unix', 1000)).toEqual({ from: 'node-a', body: 'over unix' });
    expect(await b.mesh.request('node-a', 42, 1000)).toBe(42);
    expect(a.logger.entries.find((e) => e.msg === 'peer connected')?.obj['link']).toBe('unix');
    expect(b.logger.entries.find((e) => e.msg === 'peer connected')?.obj).toMatchObject({
      link: 'unix',
      remote: 'local socket',
    });

    const path = socketOf(portOf(b.info.address));
    expect(lstatSync(path).isSocket()).toBe(true);
    expect(lstatSync(path).mode & 0o777).toBe(0o600);
    expect(lstatSync(dir).mode & 0o777).toBe(0o700);
    await b.mesh.close();
    expect(() => lstatSync(path)).toThrow(/ENOENT/);
  });

  it('go over TCP when either side has them off', async () => {
    const a = await startMesh('node-a', 1, { localSockets: false });
    const b = await startMesh('node-b');
    await connectAll([a, b]);
    expect(a.mesh.linkKind('node-b')).toBe('tcp');

    // The acceptor without a socket: the dialer (the lower name) finds none at the path and
    // dials TCP at once, not after a backoff.
    const d = await startMesh('node-d', 1, { backoff: { baseMs: 5_000, capMs: 5_000 } });
    const e = await startMesh('node-e', 1, { localSockets: false });
    const started = performance.now();
    await connectAll([d, e], 2_000);
    expect(d.mesh.linkKind('node-e')).toBe('tcp');
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it('fall back to TCP from a stale socket file, and from a wrong node at the path', async () => {
    // A socket file with nobody listening (a node killed with kill -9 leaves one): refused, so TCP.
    // (Every mesh starts before the files are planted: a starting node prunes unbound ones.)
    const b = await startMesh('node-b');
    const a = await startMesh('node-a', 1, { backoff: { baseMs: 5_000, capMs: 5_000 } });
    const stale = socketOf(portOf(b.info.address));
    const moved = `${stale}.moved`;
    renameSync(stale, moved); // b's own socket, kept aside
    await leaveStaleSocket(stale);
    expect(lstatSync(stale).isSocket()).toBe(true);
    await connectAll([a, b], 2_000);
    expect(a.mesh.linkKind('node-b')).toBe('tcp');
    renameSync(moved, stale);

    // A node of another cluster answers at node-q's path: its handshake fails, so node-p uses TCP
    // for this incarnation of node-q, and gets node-q itself.
    const q = await startMesh('node-q');
    const intruder = await startMesh('node-x', 1, { secret: 'another-cluster' });
    const p = await startMesh('node-p', 1, { handshakeTimeoutMs: 300 });
    const qPath = socketOf(portOf(q.info.address));
    renameSync(socketOf(portOf(intruder.info.address)), qPath);
    q.mesh.onRequest(() => 'from q');
    await connectAll([p, q], 5_000);
    expect(p.mesh.linkKind('node-q')).toBe('tcp');
    expect(await p.mesh.request('node-q', null, 1000)).toBe('from q');
    expect(p.mesh.stats.handshakeFailures).toBeGreaterThanOrEqual(1);
  });
});

describe('socket files of dead nodes', () => {
  it('a starting node removes the files nobody listens on, and leaves the live ones', async () => {
    const stale = join(dir, `stale-${process.pid}-${Date.now()}.sock`);
    await leaveStaleSocket(stale);
    expect(lstatSync(stale).isSocket()).toBe(true);
    const live = await startMesh('node-live');
    const livePath = socketOf(portOf(live.info.address));
    await startMesh('node-new');
    await waitFor(
      () => {
        try {
          lstatSync(stale);
          return false;
        } catch {
          return true;
        }
      },
      2_000,
      'the stale socket file to go',
    );
    expect(lstatSync(livePath).isSocket()).toBe(true);
  });
});

describe('links between peers on this host under faults', () => {
  it('a partition cuts a Unix link, and after the heal it comes back over the Unix socket', async () => {
    const fa = new FaultSwitch();
    const fb = new FaultSwitch();
    const a = await startMesh('node-a', 1, { faults: fa });
    const b = await startMesh('node-b', 1, { faults: fb });
    b.mesh.onRequest((_from, body) => body);
    await connectAll([a, b]);
    expect(a.mesh.linkKind('node-b')).toBe('unix');
    fa.dropTo(['node-b']);
    fb.dropTo(['node-a']);
    await waitFor(() => !a.mesh.isConnected('node-b'), 3_000, 'the link to go down');
    // Re-dials during the partition time out in their handshake (500 ms here): a slow answer,
    // not a wrong node, so the dialer keeps the Unix socket.
    await sleep(1_200);
    expect(a.mesh.stats.handshakeFailures).toBeGreaterThanOrEqual(1);
    fa.allow();
    fb.allow();
    await connectAll([a, b], 3_000);
    expect(a.mesh.linkKind('node-b')).toBe('unix');
    expect(await a.mesh.request('node-b', 'healed', 1000)).toBe('healed');
  });
});

describe('the socket directory and which hosts are this one', () => {
  it('trusts only a real directory of this user that nobody else can enter', () => {
    const root = tempDir('sockdir-');
    const fresh = join(root, 'fresh');
    expect(usableSocketDir(fresh, false)).toBe(false); // missing, not created
    expect(usableSocketDir(fresh, true)).toBe(true);
    expect(lstatSync(fresh).mode & 0o777).toBe(0o700);
    const open = join(root, 'open');
    mkdirSync(open, { mode: 0o755 });
    chmodSync(open, 0o755);
    expect(usableSocketDir(open, true)).toBe(false);
    const link = join(root, 'link');
    symlinkSync(fresh, link);
    expect(usableSocketDir(link, false)).toBe(false);
  });

  it('uses /tmp whatever TMPDIR says, and refuses a socket path too long for sun_path', () => {
    expect(dir).toBe(`/tmp/concord-peer-sockets-${process.getuid!()}`);
    expect(localSocketPath(dir, 65535)).toBe(`${dir}/65535.sock`);
    expect(localSocketPath(`/tmp/${'x'.repeat(100)}`, 7000)).toBeNull();
  });

  it('counts loopback addresses, localhost and this machine’s interfaces as this host', () => {
    const own = ownAddresses();
    for (const host of ['127.0.0.1', '127.3.2.1', 'localhost', 'LOCALHOST', '::1']) {
      expect(isThisHost(host, own), host).toBe(true);
    }
    const external = Object.values(networkInterfaces())
      .flat()
      .find((entry) => entry !== undefined && !entry.internal);
    if (external !== undefined) expect(isThisHost(external.address, own)).toBe(true);
    for (const host of ['10.255.255.254', '192.0.2.7', 'example.com', '2001:db8::1']) {
      expect(isThisHost(host, own), host).toBe(false);
    }
  });
});
