/**
 * Frames exchanged after the handshake. Each is a small MessagePack array whose first element is
 * the message type; arrays keep the per-frame overhead to a few bytes.
 */
import type { ErrorShape } from '../errors.js';

export const MSG_REQUEST = 0; // [0, id, body]
export const MSG_RESPONSE = 1; // [1, id, body]
export const MSG_ERROR = 2; // [2, id, ErrorShape]
export const MSG_MESSAGE = 3; // [3, body]     fire-and-forget
export const MSG_PING = 4; // [4]
export const MSG_PONG = 5; // [5]
/**
 * Graceful leave: the leaving node sends BYE on each connection; the peer stops sending new
 * requests on it and answers BYE_ACK. Frames are FIFO, so every request the peer sent before
 * its ACK reaches the leaver before the ACK does; the leaver closes only once it has the ACK
 * and has answered all of them, so no caller is left with an ambiguous "closed while waiting".
 */
export const MSG_BYE = 6; // [6]
export const MSG_BYE_ACK = 7; // [7]

/** Receives the messages of one connection, already validated. */
export interface MessageSink {
  onRequest(id: number, body: unknown): void;
  onResponse(id: number, body: unknown): void;
  onErrorResponse(id: number, error: ErrorShape): void;
  onMessage(body: unknown): void;
  onPing(): void;
  onPong(): void;
  onBye(): void;
  onByeAck(): void;
}

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

function readId(frame: unknown[]): number {
  const id = frame[1];
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 1 || id > 0xffffffff) {
    throw new ProtocolError('bad request id');
  }
  return id;
}

function readErrorShape(v: unknown): ErrorShape {
  if (typeof v !== 'object' || v === null) throw new ProtocolError('bad error shape');
  const rec = v as Record<string, unknown>;
  const { code, name, message, details } = rec;
  if (typeof code !== 'string' || typeof name !== 'string' || typeof message !== 'string') {
    throw new ProtocolError('bad error shape');
  }
  if (details !== undefined && details !== null && (typeof details !== 'object' || Array.isArray(details))) {
    throw new ProtocolError('bad error details');
  }
  return { code, name, message, details: (details ?? undefined) as Record<string, unknown> | undefined };
}

/**
 * Validates a decoded frame and hands it to `sink`; throws `ProtocolError` if it is not a
 * well-formed message. (A visitor rather than a parsed object: this runs once per frame.)
 */
export function dispatchMessage(frame: unknown, sink: MessageSink): void {
  if (!Array.isArray(frame) || frame.length === 0) throw new ProtocolError('frame is not a message array');
  const type: unknown = frame[0];
  const n = frame.length;
  switch (type) {
    case MSG_REQUEST:
      if (n !== 3) break;
      sink.onRequest(readId(frame), frame[2]);
      return;
    case MSG_RESPONSE:
      if (n !== 3) break;
      sink.onResponse(readId(frame), frame[2]);
      return;
    case MSG_ERROR:
      if (n !== 3) break;
      sink.onErrorResponse(readId(frame), readErrorShape(frame[2]));
      return;
    case MSG_MESSAGE:
      if (n !== 2) break;
      sink.onMessage(frame[1]);
      return;
    case MSG_PING:
      if (n !== 1) break;
      sink.onPing();
      return;
    case MSG_PONG:
      if (n !== 1) break;
      sink.onPong();
      return;
    case MSG_BYE:
      if (n !== 1) break;
      sink.onBye();
      return;
    case MSG_BYE_ACK:
      if (n !== 1) break;
      sink.onByeAck();
      return;
  }
  throw new ProtocolError(`unknown or malformed message (type ${describeType(type)}, ${n} elements)`);
}

/**
 * The message type for an error message. Never `String(type)`: a decoded map such as
 * `{"toString": 1}` makes that throw a TypeError instead of the ProtocolError (found by fuzzing).
 */
function describeType(type: unknown): string {
  return typeof type === 'number' ? String(type) : typeof type;
}
