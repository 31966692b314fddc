import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { Mesh } from '../../src/transport/mesh.js';
import { backends, freshStoreUrl, sleep, startCluster } from '../support/cluster.js';

interface Member {
  name: string;
  incarnation: number;
  address: string;
}

/** Open a raw TCP connection, write `bytes`, and resolve once the node closes it. */
function sendRaw(address: string, bytes: Buffer): Promise<{ closedAfterMs: number }> {
  const [host, port] = [
    address.slice(0, address.lastIndexOf(':')),
    Number(address.slice(address.lastIndexOf(':') + 1)),
  ];
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const socket = connect({ host, port }, () => socket.write(bytes));
    socket.on('data', () => {});
    socket.on('error', () => {});
    socket.on('close', () => resolve({ closedAfterMs: performance.now() - started }));
    setTimeout(() => {
      socket.destroy();
      reject(new Error('the node did not disconnect the bad peer'));
    }, 8000);
  });
}

describe.each(backends)('bad peers on the cluster port (%s)', (backend) => {
  it('garbage, an oversized frame and a wrong secret are disconnected; the node keeps serving', async () => {
    const store = await freshStoreUrl(backend);
    const [n1, n2] = await startCluster({ store, nodes: 2, secret: 'the-right-cluster-secret' });
    const members = ((await n1!.status()) as unknown as { members: Member[] }).members;
    const target = members.find((m) => m.name === 'n2')!;

    await sendRaw(target.address, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await sendRaw(target.address, Buffer.from([0x7f, 0xff, 0xff, 0xff, 1, 2, 3]));
    const garbage = Buffer.alloc(4096);
    for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 131 + 7) & 0xff;
    await sendRaw(target.address, garbage);

    // A real mesh that knows the protocol but not the secret.
    const intruder = new Mesh({
      self: { name: 'a-intruder', incarnation: 1 },
      secret: 'the-wrong-cluster-secret',
      host: '127.0.0.1',
      port: 0,
    });
    await intruder.listen();
    intruder.setPeers([{ name: 'n2', incarnation: target.incarnation, address: target.address }]);
    await sleep(1500);
    expect(intruder.isConnected('n2')).toBe(false);
    await intruder.close();

    // The cluster is intact: calls through both nodes, to entities on both nodes.
    for (let i = 0; i < 20; i++) {
      expect(await n1!.call('register', `after-${i}`, 'set', 'ok')).toEqual({ value: 'ok', version: 1 });
      expect(await n2!.call('register', `after-${i}`, 'get')).toEqual({ value: 'ok', version: 1 });
    }
  });
});
