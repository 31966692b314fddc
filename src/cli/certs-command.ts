import { type Command, Option } from 'commander';
import { CertsError, makeCerts } from './certs.js';
import { parsePositiveInt } from './options.js';

/** `concord certs`: a cluster CA and node certificates for the peer transport's TLS (runs openssl). */

interface CertsFlags {
  dir: string;
  nodes: string;
  hosts?: string;
  days: number;
  force?: boolean;
}

function list(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item.length > 0);
}

export function registerCertsCommand(program: Command): void {
  program
    .command('certs')
    .description('create a cluster CA and a TLS certificate per node for the peer transport (needs openssl)')
    .addOption(new Option('--dir <dir>', 'where to write ca.crt, ca.key, NAME.crt, NAME.key').default('./certs'))
    .addOption(
      new Option('--nodes <names>', 'comma-separated node names (the --name of each node)').makeOptionMandatory(),
    )
    .addOption(
      new Option('--hosts <hosts>', 'comma-separated extra host names / IP addresses for every node certificate'),
    )
    .addOption(
      new Option('--days <n>', 'validity of the node certificates in days').argParser(parsePositiveInt).default(825),
    )
    .addOption(new Option('--force', 'replace existing node certificates and keys'))
    .addHelpText(
      'after',
      '\nAn existing CA in --dir (ca.crt + ca.key) is reused, so nodes can be added later. Keep ca.key offline once the ' +
        'nodes have their files: whoever holds it can make certificates the cluster accepts. Start each node with\n' +
        '  --tls-cert DIR/NAME.crt --tls-key DIR/NAME.key --tls-ca DIR/ca.crt\n' +
        '(or CONCORD_TLS_CERT, CONCORD_TLS_KEY, CONCORD_TLS_CA). See SECURITY.md for what is verified.',
    )
    .action(async (flags: CertsFlags, command: Command) => {
      try {
        const result = await makeCerts({
          dir: flags.dir,
          nodes: list(flags.nodes),
          hosts: list(flags.hosts),
          days: flags.days,
          force: flags.force === true,
        });
        const lines = [
          `${result.ca.created ? 'created' : 'reused'} the cluster CA: ${result.ca.cert} (its key: ${result.ca.key})`,
        ];
        for (const [name, files] of Object.entries(result.nodes)) {
          lines.push(`${name}: --tls-cert ${files.cert} --tls-key ${files.key} --tls-ca ${files.ca}`);
        }
        process.stdout.write(`${lines.join('\n')}\n`);
      } catch (error) {
        if (error instanceof CertsError) command.error(`error: ${error.message}`);
        throw error;
      }
    });
}
