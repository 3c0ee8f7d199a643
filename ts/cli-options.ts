/**
 * CLI flags generated from the config schemas (rolldown's `getCliSchemaInfo`): each key becomes a
 * kebab-case flag with the schema's description as help, so the CLI accepts exactly what the API
 * does. Values are parsed by the schema's JSON type and validated by the schema itself.
 */
import { Command, Option } from 'commander';
import { z } from 'zod';
import { SCHEDULES, TRAINABLE, type DistillOptions } from './config';

interface JsonProperty {
  type?: string;
  enum?: string[];
  description?: string;
}

const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** `noRepeat` → `repeat`: commander reads `--no-x` as the negation of `x`, so a boolean key
 * named `noX` is exposed as `--x` / `--no-x` and inverted when read back. */
const negated = (key: string) => (/^no[A-Z]/.test(key) ? key[2].toLowerCase() + key.slice(3) : undefined);

function propertiesOf(schema: z.ZodType): [string, JsonProperty][] {
  const json = z.toJSONSchema(schema) as { properties?: Record<string, JsonProperty> };
  return Object.entries(json.properties ?? {});
}

/** Adds one flag per key of `schema` (minus `skip` and flags `cmd` already has) to `cmd`. */
export function addSchemaOptions(cmd: Command, schema: z.ZodType, skip: string[] = []): Command {
  for (const [key, prop] of propertiesOf(schema)) {
    if (skip.includes(key) || cmd.options.some((o) => o.attributeName() === key)) continue;
    if (prop.type === 'boolean') {
      const base = negated(key);
      if (base) {
        if (cmd.options.some((o) => o.attributeName() === base)) continue;
        // The positive flag first: commander then leaves the value unset when neither is given.
        cmd.addOption(new Option(`--${kebab(base)}`, `Set ${key} to false.`));
        cmd.addOption(new Option(`--no-${kebab(base)}`, prop.description ?? ''));
      } else {
        cmd.addOption(new Option(`--${kebab(key)}`, prop.description ?? ''));
        cmd.addOption(new Option(`--no-${kebab(key)}`, `Set ${key} to false.`));
      }
      continue;
    }
    const flag = `--${kebab(key)} <${prop.type === 'integer' || prop.type === 'number' ? 'n' : 'value'}>`;
    const option = new Option(flag, prop.description ?? '');
    if (prop.enum) option.choices(prop.enum);
    if (prop.type === 'integer' || prop.type === 'number') {
      // Keep the raw text when it is not a number, so the schema reports it by name.
      option.argParser((v: string) => (v.trim() !== '' && Number.isFinite(Number(v)) ? Number(v) : v));
    }
    cmd.addOption(option);
  }
  return cmd;
}

/** The values of `schema`'s keys among commander's parsed options (unset keys left out). */
export function pickSchemaOptions(schema: z.ZodType, opts: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key] of propertiesOf(schema)) {
    const base = negated(key);
    if (base && opts[base] !== undefined) out[key] = !opts[base];
    else if (opts[key] !== undefined) out[key] = opts[key];
  }
  return out;
}

const int = (v: string) => (/^-?\d+$/.test(v.trim()) ? Number(v) : v);

/** The calibration flags shared by `prune` and `analyze`; `defaults` describes each command's. */
export function addCalibrationOptions(cmd: Command, defaults: { kind: string; seqLen: string; samples: string }): Command {
  return cmd
    .option('--calib <file>', 'calibration text (.txt or .jsonl); default WikiText-2 validation, shipped in the package')
    .addOption(new Option('--calib-kind <kind>', `how calibration samples are cut; default ${defaults.kind}`).choices(['chunked', 'sampled', 'sentences']))
    .option('--seq-len <n>', `calibration tokens per sample; default ${defaults.seqLen}`, int)
    .option('--samples <n>', `calibration samples; default ${defaults.samples}`, int)
    .option('--seed <n>', 'calibration seed; default 0', int);
}

/** `base.calibration` (from --config) with the calibration flags laid over it. */
export function calibrationFromCli(opts: Record<string, unknown>, base: Record<string, unknown>): Record<string, unknown> {
  const calibration: Record<string, unknown> = { ...((base.calibration as Record<string, unknown>) ?? {}) };
  for (const [flag, key] of [['calib', 'file'], ['calibKind', 'kind'], ['seqLen', 'seqLen'], ['samples', 'nSamples'], ['seed', 'seed']]) {
    if (opts[flag] !== undefined) calibration[key] = opts[flag];
  }
  return calibration;
}

/** The flags of `prune --distill` and `compare --distill`: the most used distill() options. */
const DISTILL_FLAGS = ['steps', 'lr', 'trainable', 'schedule', 'seqLen', 'windows', 'batchSize', 'loraRank', 'data'] as const;

export function addDistillOptions(cmd: Command, what: string): Command {
  cmd.option('--distill', `heal ${what} by distillation toward the input model (distill's defaults, or the config file's \`distill\`)`);
  for (const key of DISTILL_FLAGS) {
    const isNumber = !['trainable', 'schedule', 'data'].includes(key);
    const option = new Option(`--distill-${kebab(key)} <${isNumber ? 'n' : 'value'}>`, `distill's ${key} (implies --distill)`);
    if (key === 'trainable') option.choices(TRAINABLE);
    if (key === 'schedule') option.choices(SCHEDULES);
    if (isNumber) option.argParser((v: string) => (v.trim() !== '' && Number.isFinite(Number(v)) ? Number(v) : v));
    cmd.addOption(option);
  }
  return cmd;
}

/** The distill options of `--distill*` flags over the config file's `distill`; undefined when none asks for it. */
export function distillFromCli(opts: Record<string, unknown>, base: Record<string, unknown>): Record<string, unknown> | undefined {
  const out: Record<string, unknown> = { ...((base.distill as Record<string, unknown>) ?? {}) };
  let asked = Boolean(opts.distill) || base.distill !== undefined;
  for (const key of DISTILL_FLAGS) {
    const v = opts[`distill${key[0].toUpperCase()}${key.slice(1)}`];
    if (v !== undefined) {
      out[key] = v;
      asked = true;
    }
  }
  return asked ? out : undefined;
}

/** The files a distillation reads besides the models: its training text and held-out text. */
export function distillInputFiles(d: DistillOptions | undefined): string[] {
  if (!d) return [];
  const data = typeof d.data === 'string' ? d.data : d.data?.file;
  return [...(data ? [data] : []), ...(d.heldOut ? [d.heldOut] : [])];
}
