/**
 * concord-cluster/client — an owner-aware typed client for services that call a concord
 * cluster from outside it. See ConcordClient.
 */

export {
  ConcordError,
  DomainError,
  IdempotencyKeyReused,
  maybeApplied,
  Timeout,
  Unavailable,
} from '../errors.js';
export {
  type ClientCallOptions,
  type ClientOptions,
  type ClientRef,
  type ClientStats,
  ConcordClient,
  createClient,
} from './client.js';
