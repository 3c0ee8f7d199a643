/** `--config <file>`: options from a JSON or YAML file, which command-line flags then override. */
import fs from 'node:fs';
import { parse as parseYaml } from 'yaml';

import { LayerfoldError } from './errors';

export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    if (fs.statSync(file).isDirectory()) {
      throw new LayerfoldError('E_CONFIG', `config file \`${file}\` is a folder: give a .json, .yaml or .yml file`);
    }
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if (e instanceof LayerfoldError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new LayerfoldError('E_NOT_FOUND', `config file \`${file}\` does not exist`);
    throw new LayerfoldError('E_IO', `config file \`${file}\` cannot be read: ${(e as Error).message}`, { cause: e });
  }
  const yaml = /\.ya?ml$/i.test(file);
  let value: unknown;
  try {
    value = yaml ? parseYaml(text) : JSON.parse(text);
  } catch (e) {
    throw new LayerfoldError('E_CONFIG', `config file \`${file}\` is not valid ${yaml ? 'YAML' : 'JSON'}: ${(e as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new LayerfoldError('E_CONFIG', `config file \`${file}\` must hold an object of options`);
  }
  return value as Record<string, unknown>;
}
