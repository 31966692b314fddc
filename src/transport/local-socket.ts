/**
 * Peers on the same host link over a Unix domain socket instead of loopback TCP.
 *
 * Every write on a loopback TCP socket runs the whole TCP/IP stack twice (out and in); a Unix
 * socket hands the bytes over directly, at about half the CPU per write. Nodes sharing one
 * SQLite file are always on one host, so this is their common case.
 *
 * - Where: a node that listens on TCP port P (without TLS) also listens on `<dir>/<P>.sock`,
 *   where `<dir>` is `/tmp/concord-peer-sockets-<uid>`. The port is unique among the
 *   listeners of one network namespace, so a dialer finds the path from the peer's advertised
 *   address alone: nothing new goes in the membership table.
 * - Who may connect: the directory is created with mode 0700 and used only if it is a real
 *   directory owned by this user and closed to everyone else (like tmux's and ssh-agent's), and
 *   the socket is made 0600. Another user can neither connect nor plant a socket there.
 * - Only an optimisation, never trusted more than TCP: a connection over the Unix socket runs
 *   the same mutual secret handshake. A dial that fails to connect (no socket at the path, or a
 *   dead node's file: refused) goes straight to TCP. One that reaches something that fails the
 *   handshake (a wrong node at the path) makes the dialer use TCP for that incarnation of the
 *   peer; a handshake that only times out (a paused peer, a partition) does not.
 * - Which addresses are "this host": loopback ones, `localhost`, and the addresses of this
 *   machine's own interfaces (a peer advertising one of them is in this network namespace).
 * - With TLS, nodes link over TCP only: TLS says every link is encrypted and verified.
 * - A node killed with kill -9 leaves its socket file behind. The next node on its port
 *   replaces it, and on Linux every node that starts removes the files no socket is bound to.
 */
import { lstatSync, mkdirSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { fitsUnixSocketPath } from '../unix-socket-path.js';

/** The default of MeshOptions.localSockets: on, unless the environment variable CONCORD_PEER_UNIX_SOCKETS is `0`. */
export function localSocketsDefault(): boolean {
  return process.env['CONCORD_PEER_UNIX_SOCKETS'] !== '0';
}

/** The directory of this user's peer sockets, or null where Unix sockets are not used (Windows). */
export function localSocketDir(): string | null {
  if (process.platform === 'win32' || typeof process.getuid !== 'function') return null;
  // /tmp, not the process's TMPDIR: every node of this user on this host must agree on it.
  return `/tmp/concord-peer-sockets-${process.getuid()}`;
}

/**
 * True if `dir` is a directory this user owns and nobody else can enter. With `create`, it is
 * made (mode 0700) when missing.
 */
export function usableSocketDir(dir: string, create: boolean): boolean {
  if (create) {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return false;
    }
  }
  try {
    const st = lstatSync(dir);
    return st.isDirectory() && st.uid === process.getuid?.() && (st.mode & 0o077) === 0;
  } catch {
    return false;
  }
}

/** The socket path of the node listening on `port`, or null if it would be too long. */
export function localSocketPath(dir: string, port: number): string | null {
  const path = join(dir, `${port}.sock`);
  return fitsUnixSocketPath(path) ? path : null;
}

/** The addresses of this machine's interfaces (read once per mesh; they rarely change). */
export function ownAddresses(): Set<string> {
  const own = new Set<string>();
  for (const list of Object.values(networkInterfaces())) {
    for (const entry of list ?? []) own.add(entry.address);
  }
  return own;
}

/** Whether `host` (from a peer's advertised address) is this host. */
export function isThisHost(host: string, own: ReadonlySet<string>): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost' || h === '::1' || h === '::ffff:127.0.0.1') return true;
  if (isIP(h) === 4 && h.startsWith('127.')) return true;
  return own.has(h);
}

/**
 * Removes the socket files in `dir` that no socket is bound to any more (their nodes are gone),
 * by the kernel's table of Unix sockets (Linux's /proc/net/unix; elsewhere nothing is pruned).
 * Nothing connects to them: a live node sees no stray connection.
 */
export function pruneDeadSockets(dir: string): void {
  if (process.platform !== 'linux') return;
  try {
    const names = readdirSync(dir).filter((name) => name.endsWith('.sock'));
    if (names.length === 0) return;
    const bound = new Set<string>();
    for (const line of readFileSync('/proc/net/unix', 'utf8').split('\n')) {
      const path = line.trim().split(/\s+/)[7];
      if (path?.startsWith(dir)) bound.add(path);
    }
    for (const name of names) {
      const path = join(dir, name);
      if (!bound.has(path) && lstatSync(path).isSocket()) unlinkSync(path);
    }
  } catch {
    // Best effort: a file that stays is replaced by the next node on its port.
  }
}
