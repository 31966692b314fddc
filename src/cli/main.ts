#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { registerBenchCommand } from './bench-command.js';
import { registerCertsCommand } from './certs-command.js';
import { registerCheckCommand } from './check-command.js';
import { registerDemoCommand } from './demo-command.js';
import { registerNodeCommand } from './node-command.js';

/** The `concord` command. Each subcommand lives in its own module. */

function version(): string {
  try {
    // dist/src/cli/main.js → the package root.
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
      version?: string;
    };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

const program = new Command('concord')
  .description('single-owner entities with fenced write-through state for scaled-out Node.js services')
  .version(version())
  .showHelpAfterError('(run with --help for usage)');

registerNodeCommand(program);
registerDemoCommand(program);
registerCheckCommand(program);
registerBenchCommand(program);
registerCertsCommand(program);

await program.parseAsync(process.argv);
