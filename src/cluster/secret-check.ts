/**
 * The cluster secret is checked against the store before a node joins.
 *
 * The store keeps a random cluster id (`cluster_id` in concord_meta, 16 random bytes, hex) and
 * the list of accepted *verifiers* of the secret (`secret_verifiers`, a JSON list), never the
 * secret itself: verifier = hex HMAC-SHA256(secret, "concord-secret-verifier/1:" + clusterId).
 * The first node of a cluster records the id and its verifier; every later node must hold a
 * secret (or a previous secret, during a rotation) whose verifier is in the list, or it is
 * refused with SecretMismatch before it registers or claims anything.
 *
 * Rotation (see the README): nodes restarted with CONCORD_SECRET=new CONCORD_SECRET_PREVIOUS=old
 * pass on the old verifier and add the new one; a node started with no previous secret whose
 * secret matches sets the list to just its own verifier, which ends the rotation: from then
 * on a node holding only the old secret is refused.
 *
 * Refused joins are recorded (`refused_joins`: the last 20, with the store's clock) so that
 * every running node can show them in GET /cluster and /metrics.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { hostname } from 'node:os';
import { SecretMismatch, WeakSecret } from '../errors.js';
import type { Store } from '../store/types.js';

/** Keys of concord_meta used here. */
export const SECRET_META = {
  clusterId: 'cluster_id',
  verifiers: 'secret_verifiers',
  refusedJoins: 'refused_joins',
} as const;

/** The shortest secret accepted, in bytes of its UTF-8 encoding. */
export const MIN_SECRET_BYTES = 16;
/** How many refused joins the store keeps (the latest). */
export const MAX_REFUSED_JOINS = 20;
const VERIFIER_CONTEXT = 'concord-secret-verifier/1:';
const MAX_CAS_ATTEMPTS = 50;

/** A join refused because of the secret, as recorded in the store. */
export interface RefusedJoin {
  /** Name of the node that was refused. */
  name: string;
  /** Host name of the machine it ran on. */
  host: string;
  /** When, in ms on the store's clock. */
  at: number;
  reason: string;
}

export interface SecretCheckResult {
  clusterId: string;
  /**
   * What this node did to the list of verifiers: `created` (first node of the cluster),
   * `added` (a rotation: its secret was not stored yet, its previous secret was), `ended-rotation`
   * (no previous secret, its secret matched: the list is now just its verifier), `matched`
   * (nothing to change).
   */
  outcome: 'created' | 'added' | 'ended-rotation' | 'matched';
}

/** hex HMAC-SHA256(secret, "concord-secret-verifier/1:" + clusterId). */
export function secretVerifier(secret: string, clusterId: string): string {
  return createHmac('sha256', Buffer.from(secret, 'utf8'))
    .update(VERIFIER_CONTEXT + clusterId, 'utf8')
    .digest('hex');
}

/** How to make a secret that is long enough (for error messages). */
export const SECRET_ADVICE = 'generate one with: openssl rand -hex 24';

/** Throws WeakSecret when `secret` is shorter than MIN_SECRET_BYTES (UTF-8). */
export function assertStrongSecret(secret: string, what = 'the cluster secret (CONCORD_SECRET)'): void {
  const bytes = Buffer.byteLength(secret, 'utf8');
  if (bytes < MIN_SECRET_BYTES) {
    throw new WeakSecret(
      `${what} is ${bytes} byte${bytes === 1 ? '' : 's'} long; at least ${MIN_SECRET_BYTES} are required ` +
        `(anyone who can read the store could otherwise guess it offline): ${SECRET_ADVICE}`,
      { bytes, minimum: MIN_SECRET_BYTES },
    );
  }
}

export function isWeakSecret(secret: string): boolean {
  return Buffer.byteLength(secret, 'utf8') < MIN_SECRET_BYTES;
}

/**
 * Check this node's secret against the cluster's verifiers in `store`, creating the cluster id
 * and the first verifier when the store has none yet (race-safe between first starters: one
 * id and one first list win, every starter is checked against them). Throws SecretMismatch
 * when neither `secret` nor `previousSecret` matches a stored verifier; nothing is written then.
 */
export async function checkClusterSecret(
  store: Store,
  secret: string,
  previousSecret?: string,
): Promise<SecretCheckResult> {
  const candidateId = randomBytes(16).toString('hex');
  const clusterId = await store.insertMetaIfAbsent(SECRET_META.clusterId, candidateId);
  const mine = secretVerifier(secret, clusterId);
  const previous = previousSecret === undefined ? null : secretVerifier(previousSecret, clusterId);
  const first = JSON.stringify([mine]);
  let raw = await store.insertMetaIfAbsent(SECRET_META.verifiers, first);
  if (raw === first) {
    // Our list, or an identical one that was there already: this node's secret is the cluster's.
    return { clusterId, outcome: clusterId === candidateId ? 'created' : 'matched' };
  }
  for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
    const verifiers = parseVerifiers(raw);
    const ownMatches = contains(verifiers, mine);
    const previousMatches = previous !== null && contains(verifiers, previous);
    if (!ownMatches && !previousMatches) {
      throw new SecretMismatch(
        `this node's cluster secret (CONCORD_SECRET) differs from the secret of the cluster recorded in this store ` +
          `(cluster id ${clusterId})${previousSecret === undefined ? '' : ', and so does CONCORD_SECRET_PREVIOUS'}. ` +
          'Every node of a cluster must use the same secret; to change it, follow the rotation ' +
          'procedure in the README ("Rotating the secret"). This node did not join.',
        { clusterId },
      );
    }
    let next: string[] | null = null;
    let outcome: SecretCheckResult['outcome'] = 'matched';
    if (!ownMatches) {
      next = [...verifiers, mine];
      outcome = 'added';
    } else if (previousSecret === undefined && verifiers.length > 1) {
      next = [mine];
      outcome = 'ended-rotation';
    }
    if (next === null) return { clusterId, outcome };
    if (await store.compareAndSetMeta(SECRET_META.verifiers, raw, JSON.stringify(next))) {
      return { clusterId, outcome };
    }
    raw =
      (await store.readMeta(SECRET_META.verifiers)) ?? (await store.insertMetaIfAbsent(SECRET_META.verifiers, first));
  }
  throw new Error(`could not update the secret verifiers: ${MAX_CAS_ATTEMPTS} concurrent changes in a row`);
}

function parseVerifiers(raw: string): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    parsed = null;
  }
  if (!Array.isArray(parsed) || parsed.length === 0 || !parsed.every((v) => typeof v === 'string')) {
    throw new Error(
      `concord_meta.${SECRET_META.verifiers} is not a JSON list of secret verifiers; was it edited by hand? (${raw.slice(0, 100)})`,
    );
  }
  return parsed as string[];
}

/** Whether `list` contains `verifier`, comparing in constant time (every entry is compared). */
function contains(list: readonly string[], verifier: string): boolean {
  const want = Buffer.from(verifier, 'hex');
  let found = false;
  for (const entry of list) {
    const have = Buffer.from(entry, 'hex');
    if (have.length === want.length && timingSafeEqual(have, want)) found = true;
  }
  return found;
}

/**
 * Record a refused join in the store (the last MAX_REFUSED_JOINS are kept), with the store's
 * clock. Retries lost compare-and-set races; gives up silently after a few attempts.
 */
export async function recordRefusedJoin(store: Store, name: string, reason: string): Promise<RefusedJoin> {
  const entry: RefusedJoin = { name, host: hostname(), at: await store.now(), reason };
  for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
    const raw = await store.readMeta(SECRET_META.refusedJoins);
    const next = JSON.stringify([...parseRefusedJoins(raw), entry].slice(-MAX_REFUSED_JOINS));
    if (raw === null) {
      if ((await store.insertMetaIfAbsent(SECRET_META.refusedJoins, next)) === next) return entry;
    } else if (await store.compareAndSetMeta(SECRET_META.refusedJoins, raw, next)) {
      return entry;
    }
  }
  throw new Error(`could not record the refused join: ${MAX_CAS_ATTEMPTS} concurrent changes in a row`);
}

/** The refused joins recorded in the store, oldest first. */
export async function readRefusedJoins(store: Store): Promise<RefusedJoin[]> {
  return parseRefusedJoins(await store.readMeta(SECRET_META.refusedJoins));
}

function parseRefusedJoins(raw: string | null): RefusedJoin[] {
  if (raw === null) return [];
  try {
    const parsed: unknown = JSON.parse(raw);
    if (!Array.isArray(parsed)) return [];
    return parsed.filter(
      (e): e is RefusedJoin =>
        typeof e === 'object' &&
        e !== null &&
        typeof (e as RefusedJoin).name === 'string' &&
        typeof (e as RefusedJoin).at === 'number' &&
        typeof (e as RefusedJoin).reason === 'string',
    );
  } catch {
    return [];
  }
}
