import { destination, pino } from 'pino';

/**
 * Logging: pino, JSON lines on stderr. A leaf module every layer may use.
 * `CONCORD_LOG_LEVEL` (default `info`) sets the level.
 */

export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

export function createLogger(bindings: Record<string, unknown> = {}, level?: string): Logger {
  return pino(
    { level: level ?? process.env.CONCORD_LOG_LEVEL ?? 'info', base: { ...bindings } },
    destination({ fd: 2, sync: false }),
  );
}

/** A logger that drops everything (library use without logging, unit tests). */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silentLogger;
  },
};
