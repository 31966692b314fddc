/** Identity of one node process: a restarted process keeps its name and gets a higher incarnation. */
export interface PeerId {
  name: string;
  incarnation: number;
}

/** A member of the desired peer set, as read from the membership table. */
export interface PeerInfo extends PeerId {
  /** `host:port` of the peer's transport listener (`[v6addr]:port` for IPv6). */
  address: string;
}

/** Pino-compatible subset; the transport never requires a logger. */
export interface TransportLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  debug?(obj: object, msg: string): void;
}

export const silentLogger: TransportLogger = {
  info() {},
  warn() {},
};
