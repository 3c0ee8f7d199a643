#!/usr/bin/env node
/**
 * The `layerfold` command. One subcommand per file in `commands/`; each parses flags into the
 * options the API takes, calls the facade and renders. Exit codes: 0 ok, 1 failure, 2 usage or
 * E_CONFIG, 130 interrupted.
 */
import { Command, CommanderError } from 'commander';

import { LayerfoldError } from './errors';
import { EXIT_OK, EXIT_USAGE, reportFailure } from './commands/run';
import * as analyze from './commands/analyze';
import * as compare from './commands/compare';
import * as convert from './commands/convert';
import * as distill from './commands/distill';
import * as evaluate from './commands/eval';
import * as info from './commands/info';
import * as ppl from './commands/ppl';
import * as prune from './commands/prune';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { version } = require('../package.json') as { version: string };

export function buildProgram(): Command {
  const program = new Command('layerfold')
    .description('Make large language models shallower.')
    .version(version)
    .exitOverride()
    .showHelpAfterError()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  for (const command of [info, ppl, evaluate, prune, distill, compare, analyze, convert]) command.register(program);
  for (const cmd of program.commands) cmd.exitOverride();
  return program;
}

export async function main(argv: string[] = process.argv): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      const benign = ['commander.helpDisplayed', 'commander.version', 'commander.help'].includes(e.code);
      if (benign) {
        process.exitCode = EXIT_OK;
        return;
      }
      // Usage errors: commander already printed them; --json gets the JSON document too.
      if (argv.includes('--json')) reportFailure(new LayerfoldError('E_CONFIG', e.message.replace(/^error: /, '')), true);
      process.exitCode = EXIT_USAGE;
      return;
    }
    throw e;
  }
}

if (require.main === module) {
  void main();
}
