import { describe, expect, it } from 'vitest';

import { jsonSchemas, LayerfoldError } from '../ts/index';
import { PerplexityOptionsSchema, validate } from '../ts/config';

describe('config schemas', () => {
  it('accept valid options and leave defaults to the core', () => {
    expect(validate(PerplexityOptionsSchema, { seqLen: 512 })).toEqual({ seqLen: 512 });
    expect(validate(PerplexityOptionsSchema, undefined)).toEqual({});
  });

  it('reject bad values with E_CONFIG naming the key', () => {
    const cases: [unknown, string][] = [
      [{ seqLen: 0 }, 'seqLen'],
      [{ seqLen: 1.5 }, 'seqLen'],
      [{ maxWindows: -1 }, 'maxWindows'],
      [{ batchSize: '2' }, 'batchSize'],
      [{ seqlen: 5 }, 'seqlen'],
    ];
    for (const [value, key] of cases) {
      try {
        validate(PerplexityOptionsSchema, value);
        expect.unreachable(`accepted ${JSON.stringify(value)}`);
      } catch (e) {
        expect(e).toBeInstanceOf(LayerfoldError);
        expect((e as LayerfoldError).code).toBe('E_CONFIG');
        expect((e as LayerfoldError).message).toContain(key);
      }
    }
  });

  it('export JSON Schema with descriptions and ranges', () => {
    const s = jsonSchemas().perplexity as any;
    expect(s.additionalProperties).toBe(false);
    expect(s.properties.seqLen.type).toBe('integer');
    expect(s.properties.seqLen.minimum).toBe(1);
    expect(s.properties.seqLen.description).toMatch(/Default/);
    expect((jsonSchemas().load as any).properties.dtype.enum).toEqual(['f32', 'f16', 'bf16']);
  });
});
