import { shardOf } from '../cluster/hash.js';

/**
 * The client's view of the cluster: which node owns each shard (with the shard's epoch) and
 * each node's HTTP address. Learned from `GET /cluster`, corrected by MOVED answers and by the
 * `Concord-Owner` header of answers. Entities map to shards exactly as on the nodes
 * (src/cluster/hash.ts), so the client can name the owner of any entity itself.
 */

/** The fields of `GET /cluster` the client reads. */
export interface ClusterAnswer {
  self: string;
  members: { name: string; httpAddress: string | null; status: string }[];
  shards: { map: (string | null)[]; epochs: number[] };
}

/** Statuses whose node may serve calls. */
const SERVING = new Set(['alive', 'joining', 'leaving']);

export class ShardMap {
  private owners: (string | null)[] = [];
  private epochs: number[] = [];
  private readonly urls = new Map<string, string>();

  /** Shards in the cluster (0 until the first map arrived). */
  get shardCount(): number {
    return this.owners.length;
  }

  /**
   * Fold in a node's answer to `GET /cluster` (`from`: the URL it was asked at). Each shard takes
   * the owner of the newest epoch seen; an owner the node does not know (null: its view lags,
   * e.g. just after it joined) leaves the shard as it was. Answers of several nodes can be
   * folded in one after the other: each knows its own shards for sure.
   */
  learn(answer: ClusterAnswer, from: string): void {
    const owners = answer.shards?.map;
    if (!Array.isArray(owners) || owners.length === 0) return;
    if (owners.length !== this.owners.length) {
      this.owners = new Array<string | null>(owners.length).fill(null);
      this.epochs = new Array<number>(owners.length).fill(-1);
    }
    owners.forEach((owner, shard) => {
      const epoch = answer.shards.epochs?.[shard] ?? 0;
      if (owner !== null && (epoch >= this.epochs[shard]! || this.owners[shard] === null)) {
        this.owners[shard] = owner;
        this.epochs[shard] = epoch;
      }
    });
    this.urls.set(answer.self, trimSlash(from));
    for (const member of answer.members ?? []) {
      if (member.httpAddress && SERVING.has(member.status) && member.name !== answer.self) {
        this.urls.set(member.name, trimSlash(member.httpAddress));
      }
    }
  }

  shardOf(kind: string, id: string): number | null {
    return this.owners.length === 0 ? null : shardOf(kind, id, this.owners.length);
  }

  /** The owner of the entity and its URL, when both are known. */
  ownerOf(kind: string, id: string): { shard: number; owner: string; url: string } | null {
    const shard = this.shardOf(kind, id);
    if (shard === null) return null;
    const owner = this.owners[shard];
    if (!owner) return null;
    const url = this.urls.get(owner);
    return url === undefined ? null : { shard, owner, url };
  }

  /** A MOVED answer: the shard's owner as the answering node knows it. Older epochs are ignored. */
  applyMoved(shard: number, owner: string | null, epoch: number, ownerUrl: string | null): void {
    if (shard < 0 || shard >= this.owners.length) return;
    if (epoch < (this.epochs[shard] ?? 0)) return;
    this.owners[shard] = owner;
    this.epochs[shard] = epoch;
    if (owner && ownerUrl) this.urls.set(owner, trimSlash(ownerUrl));
  }

  /** The `Concord-Owner` of an answer (no epoch: trusted only when the owner's URL is known). */
  applyOwnerHint(kind: string, id: string, owner: string): void {
    const shard = this.shardOf(kind, id);
    if (shard === null || this.owners[shard] === owner || !this.urls.has(owner)) return;
    this.owners[shard] = owner;
  }

  /** A node's URL learnt another way (its `/healthz` names it). */
  learnUrl(name: string, url: string): void {
    this.urls.set(name, trimSlash(url));
  }

  /** The URL of a node, when known. */
  urlOf(name: string): string | undefined {
    return this.urls.get(name);
  }
}

function trimSlash(url: string): string {
  return url.endsWith('/') ? url.slice(0, -1) : url;
}
