/**
 * CLI flags generated from the config schemas (rolldown's `getCliSchemaInfo`): each key becomes a
 * kebab-case flag with the schema's description as help, so the CLI accepts exactly what the API
 * does. Values are parsed by the schema's JSON type and validated by the schema itself.
 */
import { Command, Option } from 'commander';
import { z } from 'zod';

interface JsonProperty {
  type?: string;
  enum?: string[];
  description?: string;
}

const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

function propertiesOf(schema: z.ZodType): [string, JsonProperty][] {
  const json = z.toJSONSchema(schema) as { properties?: Record<string, JsonProperty> };
  return Object.entries(json.properties ?? {});
}

/** Adds one flag per key of `schema` (minus `skip` and flags `cmd` already has) to `cmd`. */
export function addSchemaOptions(cmd: Command, schema: z.ZodType, skip: string[] = []): Command {
  for (const [key, prop] of propertiesOf(schema)) {
    if (skip.includes(key) || cmd.options.some((o) => o.attributeName() === key)) continue;
    if (prop.type === 'boolean') {
      cmd.addOption(new Option(`--${kebab(key)}`, prop.description ?? ''));
      cmd.addOption(new Option(`--no-${kebab(key)}`, `Set ${kebab(key)} to false.`));
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
    if (opts[key] !== undefined) out[key] = opts[key];
  }
  return out;
}
