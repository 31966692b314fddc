/** Shared helpers for the transport tests: meshes on 127.0.0.1, a capturing logger, raw peers. */
import { connect, type Socket } from 'node:net';
import { createPackr, createUnpackr, encodeFrame, FrameDecoder } from '../../src/transport/frame.js';
import { DialerHandshake } from '../../src/transport/handshake.js';
import { Mesh, type MeshOptions } from '../../src/transport/mesh.js';
import type { PeerId, PeerInfo, TransportLogger } from '../../src/transport/types.js';

export const SECRET = 'test-cluster-secret';

export interface LogEntry {
  level: 'info' | 'warn' | 'debug';
  obj: Record<string, unknown>;
  msg: string;
}

export class CaptureLogger implements TransportLogger {
  readonly entries: LogEntry[] = [];
  info(obj: object, msg: string): void {
    this.entries.push({ level: 'info', obj: obj as Record<string, unknown>, msg });
  }
  warn(obj: object, msg: string): void {
    this.entries.push({ level: 'warn', obj: obj as Record<string, unknown>, msg });
  }
  debug(obj: object, msg: string): void {
    this.entries.push({ level: 'debug', obj: obj as Record<string, unknown>, msg });
  }
  warnings(): LogEntry[] {
    return this.entries.filter((e) => e.level === 'warn');
  }
}

export interface TestMesh {
  mesh: Mesh;
  info: PeerInfo;
  logger: CaptureLogger;
}

const open: Mesh[] = [];

export async function startMesh(
  name: string,
  incarnation = 1,
  extra: Partial<MeshOptions> = {},
  port = 0,
): Promise<TestMesh> {
  const logger = new CaptureLogger();
  const mesh = new Mesh({
    self: { name, incarnation },
    secret: SECRET,
    host: '127.0.0.1',
    port,
    handshakeTimeoutMs: 500,
    pingIntervalMs: 200,
    backoff: { baseMs: 20, capMs: 200 },
    logger,
    ...extra,
  });
  open.push(mesh);
  const addr = await mesh.listen();
  return { mesh, logger, info: { name, incarnation, address: `${addr.host}:${addr.port}` } };
}

/** Closes every mesh started by startMesh (call from afterEach). */
export async function closeAll(): Promise<void> {
  const all = open.splice(0);
  await Promise.all(all.map((m) => m.close()));
}

/** Tells each mesh about all the others and waits until every pair is connected. */
export async function connectAll(nodes: TestMesh[], timeoutMs = 5000): Promise<void> {
  const infos = nodes.map((n) => n.info);
  for (const n of nodes) n.mesh.setPeers(infos);
  await waitFor(
    () => nodes.every((a) => nodes.every((b) => a === b || a.mesh.isConnected(b.info.name))),
    timeoutMs,
    'meshes to connect',
  );
}

export async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Resolves with the rejection of `p` (fails the test if it resolves). */
export async function rejectionOf(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected the promise to reject');
}

/** A hand-driven peer speaking the wire protocol over one raw socket. */
export class RawPeer {
  readonly socket: Socket;
  /** Source port, kept because the socket forgets it once closed. */
  readonly localPort: number;
  readonly frames: unknown[] = [];
  closed = false;
  private readonly packr = createPackr();
  private readonly decoder: FrameDecoder;
  private readonly closedPromise: Promise<void>;

  private constructor(socket: Socket) {
    this.socket = socket;
    this.localPort = socket.localPort ?? 0;
    this.decoder = new FrameDecoder(createUnpackr(), 1 << 30, (v) => this.frames.push(v));
    socket.on('data', (chunk: Buffer) => {
      try {
        this.decoder.push(chunk);
      } catch {
        socket.destroy();
      }
    });
    socket.on('error', () => {});
    this.closedPromise = new Promise((resolve) =>
      socket.once('close', () => {
        this.closed = true;
        resolve();
      }),
    );
  }

  static async connect(address: string): Promise<RawPeer> {
    const [host, port] = address.split(':') as [string, string];
    const socket = connect({ host, port: Number(port) });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawPeer(socket);
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  writeValue(value: unknown): void {
    this.socket.write(encodeFrame(this.packr, value, 1 << 30));
  }

  async nextFrame(timeoutMs = 2000): Promise<unknown> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length === 0) {
      if (this.closed) throw new Error('socket closed while waiting for a frame');
      if (Date.now() > deadline) throw new Error('no frame arrived');
      await sleep(5);
    }
    return this.frames.shift();
  }

  /** Waits until the other side drops the socket; false if it is still open after timeoutMs. */
  async waitClosed(timeoutMs: number): Promise<boolean> {
    return Promise.race([this.closedPromise.then(() => true), sleep(timeoutMs).then(() => false)]);
  }

  /** Runs the dialer side of the handshake as `self`; resolves with the acceptor's identity. */
  async handshake(self: PeerId, secret = SECRET): Promise<PeerId> {
    const hs = new DialerHandshake({ self, secret: Buffer.from(secret), maxFrameBytes: 16 << 20 }, () => null);
    this.writeValue(hs.hello());
    const step1 = hs.onFrame(await this.nextFrame());
    this.writeValue(step1.reply);
    const step2 = hs.onFrame(await this.nextFrame());
    if (step2.done === undefined) throw new Error('handshake did not complete');
    return step2.done.peer;
  }

  destroy(): void {
    this.socket.destroy();
  }
}
