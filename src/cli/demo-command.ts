import { type Command, Option } from 'commander';
import { runDemo } from './demo.js';
import { DEFAULT_STORE, type OwnershipMode, ownershipOption, parsePort, parsePositiveInt } from './options.js';

/** `concord demo`: a local cluster of N `concord node` processes. */

interface DemoFlags {
  nodes: number;
  store: string;
  basePort: number;
  ownership: OwnershipMode;
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('start a local cluster of N node processes; Ctrl-C stops them all')
    .addOption(new Option('--nodes <n>', 'number of nodes').argParser(parsePositiveInt).default(3))
    // Deliberately not read from CONCORD_STORE / DATABASE_URL: a demo never touches a real database unasked.
    .addOption(new Option('--store <url>', 'store shared by the nodes').default(DEFAULT_STORE))
    .addOption(
      new Option('--base-port <port>', 'HTTP port of the first node; the others use the next ones')
        .argParser(parsePort)
        .default(4001),
    )
    .addOption(ownershipOption())
    .addHelpText(
      'after',
      `\nEnvironment: CONCORD_SECRET (optional) is the nodes' cluster secret; a short one is accepted here, with a warning. Without it the demo generates a strong secret and keeps it next to the store (PATH.secret for sqlite:PATH), so that later demos on the same store reuse it.`,
    )
    .action(async (flags: DemoFlags, command: Command) => {
      if (flags.nodes > 16) command.error('error: --nodes: at most 16 in a local demo');
      if (flags.basePort + flags.nodes - 1 > 65535) command.error('error: --base-port: the ports would pass 65535');
      process.exitCode = await runDemo(flags);
    });
}
