/**
 * `concord certs` and the TLS options of `concord node`: the command makes a CA and node
 * certificates that verify (the same recipe as SECURITY.md), keeps keys private, reuses the CA,
 * refuses to overwrite, and says clearly when openssl is missing; `concord node` refuses partial
 * or mismatched TLS options before it starts.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../support/tmp.js';
import { freePorts, runCli } from './harness.js';

async function run(args: string[], env: Record<string, string> = {}) {
  const child = runCli(args, { env });
  const { code } = await child.exited;
  return { code, stdout: child.stdout(), stderr: child.stderr() };
}

describe('concord certs', () => {
  it('makes a CA and node certificates that chain to it; keys readable by their owner only', async () => {
    const dir = tempDir('certs-cli-');
    const made = await run(['certs', '--dir', dir, '--nodes', 'n1,n2', '--hosts', '10.0.0.11,node.internal']);
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toContain(`n1: --tls-cert ${join(dir, 'n1.crt')} --tls-key ${join(dir, 'n1.key')}`);
    const ca = new X509Certificate(readFileSync(join(dir, 'ca.crt')));
    expect(ca.ca).toBe(true);
    for (const name of ['n1', 'n2']) {
      const cert = new X509Certificate(readFileSync(join(dir, `${name}.crt`)));
      expect(cert.checkIssued(ca) && cert.verify(ca.publicKey)).toBe(true);
      expect(cert.ca).toBe(false);
      expect(cert.subject).toBe(`CN=${name}`);
      expect(cert.subjectAltName).toBe(`DNS:${name}, IP Address:10.0.0.11, DNS:node.internal`);
      expect(cert.keyUsage).toEqual(expect.arrayContaining(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']));
      expect(statSync(join(dir, `${name}.key`)).mode & 0o077).toBe(0);
    }
    expect(statSync(join(dir, 'ca.key')).mode & 0o077).toBe(0);

    // A later node from the same CA; existing files are not overwritten without --force.
    const again = await run(['certs', '--dir', dir, '--nodes', 'n3']);
    expect(again.stdout).toMatch(/^reused the cluster CA/);
    const n3 = new X509Certificate(readFileSync(join(dir, 'n3.crt')));
    expect(n3.verify(ca.publicKey)).toBe(true);
    const clash = await run(['certs', '--dir', dir, '--nodes', 'n1']);
    expect(clash.code).toBe(1);
    expect(clash.stderr).toMatch(/n1\.crt\/n1\.key already exist .* use --force/);
    expect((await run(['certs', '--dir', dir, '--nodes', 'n1', '--force'])).code).toBe(0);
    expect((await run(['certs', '--dir', dir, '--nodes', 'bad name'])).stderr).toMatch(/must be 1-64 characters/);
  });

  it('says what to do when openssl is missing', async () => {
    const result = await run(['certs', '--dir', tempDir('certs-none-'), '--nodes', 'n1'], { PATH: '/nonexistent' });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/needs the openssl command, which was not found/);
    expect(result.stderr).toMatch(/apt-get install openssl/);
  });
});

describe('concord node TLS options', () => {
  it('refuses some of --tls-cert/--tls-key/--tls-ca without the others, and material that does not fit', async () => {
    const dir = tempDir('certs-node-');
    expect((await run(['certs', '--dir', dir, '--nodes', 'n1,n2'])).code).toBe(0);
    const base = ['node', '--name', 'n1', '--http-port', '1', '--store', `sqlite:${join(dir, 'db')}`];
    const env = { CONCORD_SECRET: 'a-secret-that-is-long-enough' };
    const partial = await run([...base, '--tls-cert', join(dir, 'n1.crt')], env);
    expect(partial.code).toBe(1);
    expect(partial.stderr).toMatch(/TLS needs all three of --tls-cert, --tls-key and --tls-ca/);
    const missing = await run(
      [...base, '--tls-cert', join(dir, 'nope.crt'), '--tls-key', join(dir, 'n1.key'), '--tls-ca', join(dir, 'ca.crt')],
      env,
    );
    expect(missing.stderr).toMatch(/cannot read the TLS certificate \(--tls-cert\)/);
    const wrongKey = await run(
      ['node', '--name', 'n1', '--http-port', String((await freePorts(1))[0]), '--store', `sqlite:${join(dir, 'db')}`],
      {
        ...env,
        CONCORD_TLS_CERT: join(dir, 'n1.crt'),
        CONCORD_TLS_KEY: join(dir, 'n2.key'),
        CONCORD_TLS_CA: join(dir, 'ca.crt'),
      },
    );
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stderr).toMatch(
      /could not start: the node key \(--tls-key\) is not the key of the node certificate/,
    );
  });
});
