/**
 * Number formatting shared by `concord check`'s console summary and its HTML report.
 */

/**
 * A share (0..1) as a percentage, with `digits` decimals — or more, up to 6, when fewer would
 * round a share that is not exactly 1 up to 100 (or one that is not exactly 0 down to 0):
 * 0.9996 → "99.96", 1 → "100.0", 0.0004 → "0.04".
 */
export function formatPercent(share: number, digits = 1): string {
  let text = (share * 100).toFixed(digits);
  for (let d = digits + 1; d <= 6 && ((share < 1 && Number(text) >= 100) || (share > 0 && Number(text) <= 0)); d++) {
    text = (share * 100).toFixed(d);
  }
  return text;
}
