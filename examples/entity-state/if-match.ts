/**
 * `If-Match` for the entity routes: one entity tag carrying a version, `"3"` (a weak
 * `W/"3"` or a bare `3` is accepted too), or `*` (any version). Returns the version, or
 * `undefined` when there is no precondition, or an Error to answer 400.
 */
export function parseIfMatch(header: string | string[] | undefined): number | undefined | Error {
  if (header === undefined) return undefined;
  const value = (Array.isArray(header) ? header.join(',') : header).trim();
  if (value === '' || value === '*') return undefined;
  const match = /^(?:W\/)?"?(\d{1,15})"?$/.exec(value);
  if (!match) return new Error(`If-Match must be one quoted version, e.g. "3" (got ${JSON.stringify(value)})`);
  return Number(match[1]);
}
