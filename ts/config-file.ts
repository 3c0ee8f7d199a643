/** `--config <file>`: options from a JSON or YAML file, which command-line flags then override. */
import fs from 'node:fs';
import { parse as parseYaml } from 'yaml';

import { LayerfoldError } from './errors';

export function readConfigFile(file: string): Record<string, unknown> {
  if (!fs.existsSync(file)) throw new LayerfoldError('E_NOT_FOUND', `config file \`${file}\` does not exist`);
  const text = fs.readFileSync(file, 'utf8');
  let value: unknown;
  try {
    value = /\.ya?ml$/i.test(file) ? parseYaml(text) : JSON.parse(text);
  } catch (e) {
    throw new LayerfoldError('E_CONFIG', `config file \`${file}\` is not valid ${/\.ya?ml$/i.test(file) ? 'YAML' : 'JSON'}: ${(e as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new LayerfoldError('E_CONFIG', `config file \`${file}\` must hold an object of options`);
  }
  return value as Record<string, unknown>;
}
