import { Unavailable } from '../errors.js';

/**
 * The peer could not be reached: there was no authenticated connection to it within the
 * request's timeout, it left the peer set, its connection dropped while the request waited, or
 * the connection's write backlog was full.
 *
 * It is an `Unavailable` (code `'UNAVAILABLE'`), with two extra fields that also travel in
 * `details` so they survive `errorToShape`/`errorFromShape`:
 * - `peer`: the name that was called;
 * - `maybeDelivered`: `false` when the request certainly never left this node (safe to retry
 *   anywhere); `true` when it was written to a connection that then dropped, so the peer may
 *   have acted on it — a caller routing a state-changing call should treat that like `Timeout`.
 */
export class PeerUnreachable extends Unavailable {
  readonly peer: string;
  readonly maybeDelivered: boolean;

  constructor(peer: string, message: string, maybeDelivered = false) {
    super(message, { peer, maybeDelivered });
    this.peer = peer;
    this.maybeDelivered = maybeDelivered;
  }
}
