/**
 * `Moved`: this node does not own the entity's shard (any more). Internal and always
 * retryable: it is raised only when the call was NOT executed. It carries this node's
 * best knowledge of the owner, which the caller folds into its shard map.
 */
export class Moved extends Error {
  constructor(
    readonly shard: number,
    readonly owner: string | null,
    readonly epoch: number,
  ) {
    super(`shard ${shard} is not served here (owner hint: ${owner ?? 'none'}, epoch ${epoch})`);
    this.name = 'Moved';
  }
}
