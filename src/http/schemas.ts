/**
 * JSON schemas shared by every app's routes. Ids in URLs are limited in length and to a
 * safe charset, so they can be logged, shown on the dashboard and used as entity ids
 * without escaping surprises; anything else is answered 400 before reaching a node.
 */

export const ID_MAX_LENGTH = 200;
export const ID_PATTERN = '^[A-Za-z0-9_.:@~-]+$';
export const ID_RULE = `1-${ID_MAX_LENGTH} characters of letters, digits and _ . : @ ~ -`;

/** Schema of one id in a URL. */
export const idSchema = {
  type: 'string',
  minLength: 1,
  maxLength: ID_MAX_LENGTH,
  pattern: ID_PATTERN,
} as const;

/** `params` schema for a route whose path parameters are all ids: `paramsSchema('id')`. */
export function idParamsSchema(...names: string[]): Record<string, unknown> {
  return {
    type: 'object',
    required: names,
    properties: Object.fromEntries(names.map((name) => [name, idSchema])),
  };
}
