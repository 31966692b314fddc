/**
 * TLS for the peer transport: mutual, TLS 1.3 only, certificates from the cluster's own CA.
 *
 * What is verified, on both ends of every peer connection:
 * - the protocol is TLS 1.3 (`minVersion`), so every record is encrypted and authenticated
 *   (AEAD): a byte changed on the path fails the record and ends that connection;
 * - the peer presents a certificate that chains to the cluster CA (`ca`): the acceptor
 *   requests and requires one (`requestCert`, `rejectUnauthorized`), the dialer verifies the
 *   acceptor's;
 * - the certificate's names are NOT compared with the address dialed or with the peer's node
 *   name: nodes dial whatever address a member registered in the store (often an IP), and the
 *   secret handshake that runs inside TLS authenticates the node's name and incarnation. A
 *   certificate therefore says "a node of this cluster", the secret "a node holding the
 *   cluster's secret"; a peer needs both.
 *
 * The certificate's subject and fingerprint are logged when a peer connects.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { createSecureContext, type PeerCertificate, type SecureContext, TLSSocket } from 'node:tls';

/** PEM text (or a Buffer of it) of this node's certificate, its private key and the cluster CA. */
export interface MeshTlsOptions {
  /** This node's certificate (PEM); may be followed by intermediate certificates. */
  cert: string | Buffer;
  /** Its private key (PEM, unencrypted). */
  key: string | Buffer;
  /** The cluster CA certificate(s) (PEM): peers must present a certificate it signed. */
  ca: string | Buffer;
}

export const TLS_MIN_VERSION = 'TLSv1.3';

export class TlsConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TlsConfigError';
  }
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

function certificatesIn(pem: string, what: string): X509Certificate[] {
  const blocks = pem.match(PEM_CERT) ?? [];
  if (blocks.length === 0) throw new TlsConfigError(`${what} holds no PEM certificate`);
  return blocks.map((block) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new TlsConfigError(`${what} holds a certificate that cannot be read: ${(err as Error).message}`);
    }
  });
}

/** What a mesh keeps of its TLS configuration. */
export interface MeshTls {
  readonly options: MeshTlsOptions;
  /** For dialing (createSecureContext with the same material). */
  readonly clientContext: SecureContext;
  /** This node's certificate, for logs. */
  readonly subject: string;
  readonly validTo: Date;
}

/**
 * Checks the material before anything listens or dials, so that a mistake is one clear error at
 * start-up instead of a handshake failure per connection: the key must match the certificate,
 * the certificate must be current and signed by the CA (or by an intermediate in either file).
 */
export function loadMeshTls(options: MeshTlsOptions, now = new Date()): MeshTls {
  const certPem = options.cert.toString();
  const caPem = options.ca.toString();
  const [leaf, ...chain] = certificatesIn(certPem, 'the node certificate (--tls-cert)');
  const cas = certificatesIn(caPem, 'the cluster CA (--tls-ca)');
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(options.key);
  } catch (err) {
    throw new TlsConfigError(`the node key (--tls-key) cannot be read: ${(err as Error).message}`);
  }
  if (!leaf!.checkPrivateKey(key)) {
    throw new TlsConfigError('the node key (--tls-key) is not the key of the node certificate (--tls-cert)');
  }
  const validTo = new Date(leaf!.validTo);
  if (validTo.getTime() < now.getTime()) {
    throw new TlsConfigError(`the node certificate (--tls-cert) expired on ${validTo.toISOString()}`);
  }
  if (new Date(leaf!.validFrom).getTime() > now.getTime() + 60_000) {
    throw new TlsConfigError(`the node certificate (--tls-cert) is not valid before ${leaf!.validFrom}`);
  }
  const issuers = [...chain, ...cas];
  if (!issuers.some((issuer) => leaf!.checkIssued(issuer) && leaf!.verify(issuer.publicKey))) {
    throw new TlsConfigError(
      'the node certificate (--tls-cert) is not signed by the cluster CA (--tls-ca): peers would refuse it. ' +
        'Make node certificates with `concord certs` (or the openssl recipe in SECURITY.md) from the same CA.',
    );
  }
  let clientContext: SecureContext;
  try {
    clientContext = createSecureContext({
      cert: options.cert,
      key: options.key,
      ca: options.ca,
      minVersion: TLS_MIN_VERSION,
    });
  } catch (err) {
    throw new TlsConfigError(`the TLS certificate, key or CA cannot be used: ${(err as Error).message}`);
  }
  return { options, clientContext, subject: leaf!.subject.replaceAll('\n', ', '), validTo };
}

/** The peer certificate of an open TLS socket, for logs (subject CN and SHA-256 fingerprint). */
export function peerCertificateSummary(socket: unknown): { subject: string; fingerprint256: string } | undefined {
  if (!(socket instanceof TLSSocket)) return undefined;
  const cert: PeerCertificate | Record<string, never> = socket.getPeerCertificate();
  if (cert === null || Object.keys(cert).length === 0) return undefined;
  const cn = (cert as PeerCertificate).subject?.CN;
  return {
    subject: Array.isArray(cn) ? cn.join(',') : (cn ?? '?'),
    fingerprint256: (cert as PeerCertificate).fingerprint256 ?? '?',
  };
}

/** Whether a socket error is a failure of TLS itself (bad certificate, alert, bad record). */
export function isTlsError(err: NodeJS.ErrnoException): boolean {
  const code = err.code ?? '';
  return (
    code.startsWith('ERR_SSL') ||
    code.startsWith('ERR_TLS') ||
    code === 'EPROTO' ||
    /CERT|UNABLE_TO_(GET|VERIFY)|SELF_SIGNED/.test(code) ||
    (err as { library?: unknown }).library === 'SSL routines'
  );
}
