/**
 * On-path attackers for tests: TCP proxies that sit between two nodes (one node dials the proxy,
 * which forwards to the other) and change the byte stream from the dialer to the acceptor.
 * A node is put behind one with `--advertise-port <proxy port>`: peers then dial the proxy.
 */
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';

export class TamperingProxy {
  /** TCP connections accepted so far. */
  connections = 0;
  private target: { host: string; port: number } | null = null;
  private readonly sockets = new Set<Socket>();
  private flipPending = false;
  /** Frames to insert at the next frame boundary of a dialer→acceptor stream (plain transport only). */
  private readonly injections: Buffer[] = [];

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  /** Listens on 127.0.0.1 (any free port); set the target before anything connects. */
  static async start(target?: string): Promise<TamperingProxy> {
    let proxy: TamperingProxy | null = null;
    const server = createServer((client) => proxy!.accept(client));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    proxy = new TamperingProxy(server, typeof address === 'object' && address ? address.port : 0);
    if (target !== undefined) proxy.setTarget(target);
    return proxy;
  }

  setTarget(address: string): void {
    const colon = address.lastIndexOf(':');
    this.target = { host: address.slice(0, colon), port: Number(address.slice(colon + 1)) };
  }

  /** XOR one bit of one byte in the next chunk any dialer sends. */
  flipNext(): void {
    this.flipPending = true;
  }

  /** Insert `frame` (complete, with its length header) between two frames of the next dialer stream that sends. */
  inject(frame: Buffer): void {
    this.injections.push(frame);
  }

  get pendingInjections(): number {
    return this.injections.length;
  }

  private accept(client: Socket): void {
    const target = this.target;
    if (target === null) {
      client.destroy();
      return;
    }
    this.connections++;
    const upstream = tcpConnect(target);
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => {
        this.sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    // Frame boundaries of this stream (meaningful only when it carries plain frames).
    let header = Buffer.alloc(0);
    let bodyLeft = 0;
    client.on('data', (data: Buffer) => {
      let chunk = data;
      if (this.flipPending && chunk.length > 0) {
        this.flipPending = false;
        chunk = Buffer.from(chunk);
        const at = Math.floor(chunk.length / 2);
        chunk[at] = chunk[at]! ^ 0x01;
      }
      let from = 0;
      let at = 0;
      const injectHere = () => {
        if (this.injections.length === 0) return;
        upstream.write(chunk.subarray(from, at));
        from = at;
        for (const frame of this.injections.splice(0)) upstream.write(frame);
      };
      while (at < chunk.length) {
        if (bodyLeft > 0) {
          const n = Math.min(bodyLeft, chunk.length - at);
          bodyLeft -= n;
          at += n;
          if (bodyLeft === 0) injectHere();
          continue;
        }
        const take = chunk.subarray(at, at + 4 - header.length);
        header = Buffer.concat([header, take]);
        at += take.length;
        if (header.length === 4) {
          bodyLeft = header.readUInt32BE(0);
          header = Buffer.alloc(0);
          if (bodyLeft === 0) injectHere();
        }
      }
      // At a boundary between chunks: inject before the next frame.
      if (bodyLeft === 0 && header.length === 0 && this.injections.length > 0) {
        upstream.write(chunk.subarray(from));
        from = chunk.length;
        for (const frame of this.injections.splice(0)) upstream.write(frame);
      }
      if (from < chunk.length) upstream.write(chunk.subarray(from));
    });
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}
