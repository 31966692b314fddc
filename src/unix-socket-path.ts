/**
 * Whether `path` fits a Unix socket address (sun_path is 108 bytes on Linux, 104 on macOS; we
 * keep a margin). Shared by the SQLite shared writer's socket and the peer sockets.
 */
export function fitsUnixSocketPath(path: string): boolean {
  return Buffer.byteLength(path) <= 100;
}
