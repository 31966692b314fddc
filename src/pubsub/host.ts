import type { Mesh } from '../transport/mesh.js';
import type { PeerId } from '../transport/types.js';

/**
 * What pub/sub and the replicated map need from the node they run in. A `ConcordNode`
 * satisfies it as it is; declaring it here keeps this folder free of imports from the
 * runtime that wires it (imports only go down).
 */
export interface PeerHost {
  /** This node's name. */
  readonly name: string;
  /** The peer transport: one FIFO connection per pair of nodes. */
  readonly mesh: Pick<Mesh, 'send' | 'request' | 'isConnected' | 'connectedPeers' | 'on' | 'off'>;
  /** Register the handler of peer messages whose `t` is `type`. */
  onPeerMessage(type: string, handler: (from: PeerId, body: Record<string, unknown>) => void): void;
  /** Register the handler of peer requests whose `t` is `type`; its result is the answer. */
  onPeerRequest(type: string, handler: (from: PeerId, body: Record<string, unknown>) => unknown): void;
  /** The membership table as last read from the store (live rows and recently expired ones). */
  readonly shards: { allMembers(): readonly { readonly name: string }[] };
}

/** Minimal logger (a pino child in a node). */
export interface PubSubLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
