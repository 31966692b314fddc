/** The `Idempotency-Key` header parser shared by the apps (src/http/idempotency.ts). */
import { describe, expect, it } from 'vitest';
import { idempotencyKeyOf, parseIdempotencyKey } from '../../src/http/idempotency.js';

describe('Idempotency-Key header', () => {
  it('accepts a Structured Field string and a bare token, which name the same key', () => {
    expect(parseIdempotencyKey('"8e03978e-40d5-43e8-bc93-6894a57f9324"')).toBe('8e03978e-40d5-43e8-bc93-6894a57f9324');
    expect(parseIdempotencyKey('8e03978e-40d5-43e8-bc93-6894a57f9324')).toBe('8e03978e-40d5-43e8-bc93-6894a57f9324');
    expect(parseIdempotencyKey('  "abc"  ')).toBe('abc');
    expect(parseIdempotencyKey('"with space and \\"quotes\\" and \\\\"')).toBe('with space and "quotes" and \\');
    expect(parseIdempotencyKey(`"${'x'.repeat(255)}"`)).toHaveLength(255);
    expect(parseIdempotencyKey(['"one"'])).toBe('one');
    expect(parseIdempotencyKey(undefined)).toBeUndefined();
    expect(idempotencyKeyOf({ headers: { 'idempotency-key': 'k1' } })).toBe('k1');
    expect(idempotencyKeyOf({ headers: {} })).toBeUndefined();
  });

  it('refuses anything else with a BAD_MESSAGE error (HTTP 400) that says why', () => {
    const bad = [
      '',
      '""',
      '"unterminated',
      `"${'x'.repeat(256)}"`,
      'x'.repeat(256),
      'has space',
      'quote"inside',
      'back\\slash',
      '"a", "b"',
      '"a";param=1',
      '"bad \\n escape"',
      '"é"',
      'é',
      '"tab\there"',
    ];
    for (const value of bad) {
      let error: unknown;
      try {
        parseIdempotencyKey(value);
      } catch (caught) {
        error = caught;
      }
      expect(error, value).toMatchObject({
        code: 'BAD_MESSAGE',
        message: expect.stringMatching(/^invalid Idempotency-Key header: /),
      });
    }
    expect(() => parseIdempotencyKey(['"a"', '"b"'])).toThrow(/one Idempotency-Key header/);
  });
});
