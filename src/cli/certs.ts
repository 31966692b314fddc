/**
 * `concord certs`: a cluster CA and one certificate per node, for the peer transport's mutual TLS
 * (`--tls-cert`, `--tls-key`, `--tls-ca`). It runs the `openssl` command (OpenSSL 1.1.1 or 3.x),
 * exactly the recipe in SECURITY.md, so what it makes can be made by hand too:
 *
 *   openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
 *   openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=concord cluster CA" \
 *     -addext basicConstraints=critical,CA:TRUE,pathlen:0 -addext keyUsage=critical,keyCertSign,cRLSign -out ca.crt
 *   openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out n1.key
 *   openssl req -new -key n1.key -subj /CN=n1 -out n1.csr
 *   openssl x509 -req -in n1.csr -CA ca.crt -CAkey ca.key -set_serial 0x<random> -days 825 -sha256 \
 *     -extfile n1.ext -out n1.crt      # n1.ext: see nodeExtensions()
 *
 * Keys are ECDSA P-256 and are written readable by their owner only. An existing CA in the
 * directory is reused, so nodes can be added later; existing node files are not overwritten
 * unless `force`.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';

export interface CertsOptions {
  /** Directory for ca.crt, ca.key and NAME.crt / NAME.key per node (created if missing). */
  dir: string;
  /** Node names: each gets a certificate with CN and a DNS subjectAltName of its name. */
  nodes: readonly string[];
  /** Extra subjectAltNames for every node certificate (host names or IP addresses). */
  hosts?: readonly string[];
  /** Validity of node certificates in days (default 825). The CA is valid for 10 years. */
  days?: number;
  /** Replace existing node certificates and keys. */
  force?: boolean;
  /** The openssl executable (default `openssl` on the PATH). */
  openssl?: string;
}

export interface NodeCertFiles {
  cert: string;
  key: string;
  ca: string;
}

export interface CertsResult {
  ca: { cert: string; key: string; created: boolean };
  nodes: Record<string, NodeCertFiles>;
}

export class CertsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CertsError';
  }
}

const NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const HOST = /^[A-Za-z0-9.:*-]{1,253}$/;

function run(openssl: string, args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(openssl, args, { cwd, timeout: 60_000 }, (error, _stdout, stderr) => {
      if (error === null) {
        resolve();
        return;
      }
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(
          new CertsError(
            `concord certs needs the openssl command, which was not found (${openssl}). Install it ` +
              '(Debian/Ubuntu: apt-get install openssl; macOS has it), or make the files with the openssl recipe in SECURITY.md on a machine that has it.',
          ),
        );
        return;
      }
      reject(new CertsError(`openssl ${args[0]} failed: ${String(stderr).trim() || error.message}`));
    });
  });
}

/** The X.509 v3 extensions of a node certificate (an `-extfile` for `openssl x509 -req`). */
export function nodeExtensions(name: string, hosts: readonly string[] = []): string {
  const names = [`DNS:${name}`, ...hosts.map((h) => (isIP(h) ? `IP:${h}` : `DNS:${h}`))];
  return [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth,clientAuth',
    `subjectAltName=${[...new Set(names)].join(',')}`,
    '',
  ].join('\n');
}

export async function makeCerts(options: CertsOptions): Promise<CertsResult> {
  const openssl = options.openssl ?? 'openssl';
  const days = options.days ?? 825;
  if (!Number.isInteger(days) || days < 1 || days > 36_500) throw new CertsError('--days must be 1-36500');
  if (options.nodes.length === 0) throw new CertsError('name at least one node (--nodes n1,n2,n3)');
  for (const name of options.nodes) {
    if (!NAME.test(name)) throw new CertsError(`node name "${name}" must be 1-64 characters of letters, digits, _ . -`);
  }
  for (const host of options.hosts ?? []) {
    if (!HOST.test(host)) throw new CertsError(`"${host}" is not a host name or IP address`);
  }
  const dir = options.dir;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const caCert = join(dir, 'ca.crt');
  const caKey = join(dir, 'ca.key');
  const existing = options.nodes.filter((n) => existsSync(join(dir, `${n}.crt`)) || existsSync(join(dir, `${n}.key`)));
  if (existing.length > 0 && !options.force) {
    throw new CertsError(
      `${existing.map((n) => `${n}.crt/${n}.key`).join(', ')} already exist in ${dir}; use --force to replace them`,
    );
  }

  let created = false;
  if (!existsSync(caCert) || !existsSync(caKey)) {
    if (existsSync(caCert) !== existsSync(caKey)) {
      throw new CertsError(`${dir} has only one of ca.crt and ca.key; move it away or add the other`);
    }
    privateFile(caKey);
    await run(openssl, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'ca.key'], dir);
    const tag = randomBytes(4).toString('hex');
    await run(
      openssl,
      [
        'req',
        '-x509',
        '-new',
        '-key',
        'ca.key',
        '-sha256',
        '-days',
        '3650',
        '-subj',
        `/CN=concord cluster CA ${tag}`,
        '-addext',
        'basicConstraints=critical,CA:TRUE,pathlen:0',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
        '-out',
        'ca.crt',
      ],
      dir,
    );
    created = true;
  }

  const nodes: Record<string, NodeCertFiles> = {};
  for (const name of options.nodes) {
    const key = `${name}.key`;
    const csr = `${name}.csr`;
    const ext = `${name}.ext`;
    privateFile(join(dir, key));
    await run(openssl, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key], dir);
    await run(openssl, ['req', '-new', '-key', key, '-subj', `/CN=${name}`, '-out', csr], dir);
    writeFileSync(join(dir, ext), nodeExtensions(name, options.hosts));
    try {
      await run(
        openssl,
        [
          'x509',
          '-req',
          '-in',
          csr,
          '-CA',
          'ca.crt',
          '-CAkey',
          'ca.key',
          '-set_serial',
          `0x${randomBytes(16).toString('hex')}`,
          '-days',
          String(days),
          '-sha256',
          '-extfile',
          ext,
          '-out',
          `${name}.crt`,
        ],
        dir,
      );
    } finally {
      rmSync(join(dir, csr), { force: true });
      rmSync(join(dir, ext), { force: true });
    }
    nodes[name] = { cert: join(dir, `${name}.crt`), key: join(dir, key), ca: caCert };
  }
  return { ca: { cert: caCert, key: caKey, created }, nodes };
}

/** An empty file readable by its owner only, for openssl to write a key into (it keeps the mode). */
function privateFile(path: string): void {
  rmSync(path, { force: true });
  writeFileSync(path, '', { mode: 0o600 });
  chmodSync(path, 0o600);
}

/**
 * A `--tls-*` / `CONCORD_TLS_*` value: a file path, or the PEM text itself (it starts with
 * `-----BEGIN`), which suits secrets mounted into environment variables.
 */
export function readPemOption(value: string, what: string): string {
  if (value.trimStart().startsWith('-----BEGIN')) return value;
  try {
    return readFileSync(value, 'utf8');
  } catch (error) {
    throw new CertsError(`cannot read ${what} from ${value}: ${(error as Error).message}`);
  }
}
