/**
 * Peer transport: the TCP mesh between concord nodes.
 *
 * Nodes talk to each other only to route calls to an entity's owner and to spread pub/sub
 * messages. Nothing here is needed for correctness (the store is the authority), so the
 * transport may drop things; it must never block or crash the node.
 *
 * - One connection per pair of nodes; the node whose name sorts lower dials, the other accepts.
 *   Between nodes on one host it is a Unix socket when one is there (local-socket.ts), else TCP.
 *   `Mesh.setPeers` (fed from the membership table) says who should be connected; dials retry
 *   with exponential backoff + jitter, capped at ~1 s.
 * - Frames: 4-byte big-endian length + plain MessagePack body (frame.ts). Frames above the limit
 *   (16 MiB by default, 4 KiB before authentication) are refused before any allocation.
 * - Connections open with a mutual HMAC-SHA256 challenge–response over the cluster secret
 *   (handshake.ts). Any handshake failure, timeout, malformed or oversized frame destroys that
 *   socket and logs a warning with the remote address; the node keeps serving everyone else.
 *   The handshake authenticates; it does not encrypt. With `tls` (tls.ts) every connection is
 *   mutual TLS 1.3 with certificates from the cluster CA, and the handshake runs inside it;
 *   without it, run the mesh on a private network.
 * - After the handshake (protocol.ts): requests multiplexed by id, responses, error responses
 *   (errorToShape/errorFromShape, so codes survive), fire-and-forget messages, ping/pong.
 *   Frames written in the same event-loop turn go out in one socket write (connection.ts).
 * - Liveness: every connection is pinged each `pingIntervalMs`; one from which nothing arrived
 *   for 3 intervals (e.g. a SIGSTOPped process) is closed, 'peer-down' fires, and its pending
 *   requests reject with `PeerUnreachable`.
 * - `FaultSwitch` (faults.ts) is the test harness's partition switch: `dropTo` drops OUTGOING
 *   frames only; a two-way partition is `dropTo` on both sides.
 *
 * Usage:
 *
 *   const mesh = new Mesh({ self: { name, incarnation }, secret, host: '0.0.0.0', port: 7001, logger });
 *   mesh.onRequest((from, body) => route(body));          // may return a promise; throws go back as errors
 *   mesh.onMessage((from, body) => deliver(body));
 *   await mesh.listen();
 *   mesh.setPeers(liveNodes);                             // again whenever membership changes
 *   const answer = await mesh.request('node-b', body, 500);
 *   mesh.send('node-b', { topic, msg });                  // false if not connected (dropped)
 *   await mesh.close();
 *
 * Errors: `PeerUnreachable` (an `Unavailable`, code 'UNAVAILABLE', with `maybeDelivered`),
 * `Timeout` (code 'TIMEOUT': written, not answered in time), `Stopped` (mesh closed), a
 * BAD_MESSAGE `ConcordError` (body not encodable or too large), or the remote handler's error.
 */
export { formatAddress, parseAddress } from './address.js';
export { type BackoffPolicy, backoffDelay, DEFAULT_BACKOFF } from './backoff.js';
export { PeerUnreachable } from './errors.js';
export { FaultSwitch } from './faults.js';
export {
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  FrameDecoder,
  FrameError,
  PRE_AUTH_MAX_FRAME_BYTES,
} from './frame.js';
export { PROTOCOL_VERSION } from './handshake.js';
export {
  type LinkKind,
  Mesh,
  type MeshEvents,
  type MeshOptions,
  type MessageHandler,
  type RequestHandler,
} from './mesh.js';
export { type MeshTlsOptions, TlsConfigError } from './tls.js';
export type { PeerId, PeerInfo, TransportLogger } from './types.js';
