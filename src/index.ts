/**
 * concord — single-owner entities for scaled-out Node.js services.
 *
 * Every entity has exactly one live owner in the cluster; calls from any node are routed
 * to it; state is served from memory and written through to the store under a fencing
 * epoch, so a stale owner can never overwrite anything.
 */

export { MIN_SECRET_BYTES, type RefusedJoin } from './cluster/secret-check.js';
export {
  type AnyEntityDefinition,
  type CallOptions,
  defineEntity,
  type EntityDefinition,
  type EntityOptions,
  type EntityRef,
  type Handler,
  type Handlers,
  type MessageOf,
  type ReplyOf,
  type TurnContext,
} from './entity/define.js';
export {
  ConcordError,
  type ConcordErrorCode,
  ConfigMismatch,
  DomainError,
  type DomainErrorPayload,
  HandlerError,
  IdempotencyKeyReused,
  isDomainError,
  maybeApplied,
  NameInUse,
  SecretMismatch,
  Stopped,
  StoreUnavailable,
  Timeout,
  Unavailable,
  WeakSecret,
  WrongExpectedVersion,
} from './errors.js';
export * from './events/index.js';
export type { AppContext, AppNode, ConcordApp } from './http/app.js';
export {
  IDEMPOTENCY_KEY_HEADER,
  idempotencyKeyOf,
  MAX_HTTP_IDEMPOTENCY_KEY_LENGTH,
  parseIdempotencyKey,
} from './http/idempotency.js';
export { ID_MAX_LENGTH, ID_PATTERN, idParamsSchema, idSchema } from './http/schemas.js';
export { createLogger, type Logger } from './logger.js';
export type {
  ChangeListener,
  MapChange,
  PubSub,
  PubSubEvents,
  PubSubStats,
  ReplicatedMap,
  ReplicatedMapOptions,
  ReplicatedMapStats,
  Subscriber,
  SyncOutcome,
} from './pubsub/index.js';
export {
  type ClusterStatus,
  ConcordNode,
  generateSecret,
  type MemberStatus,
  type NodeOptions,
  startNode,
} from './runtime/node.js';
export { openStore } from './store/open.js';
export type { Durability, Store, StoreOptions } from './store/types.js';
export { type MeshTlsOptions, TlsConfigError } from './transport/tls.js';
