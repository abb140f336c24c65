/*
 * doctor/certs — the certificates the configurations name, read with
 * node:crypto, and checked: present, valid now and for 21 more days, and a key
 * no weaker than RSA 2048 or EC 256 bits. A file may hold the key and a chain
 * (smtpd_tls_chain_files): the first certificate in it is the server's own.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Finding } from './report.js';

/** A certificate a configuration names: files, or (Dovecot without `<`) the PEM text itself. */
export interface CertRef {
  /** The setting that names it, e.g. `Postfix smtpd_tls_cert_file`. */
  setting: string;
  /** Read in order as one text: smtpd_tls_chain_files may put the key before the certificate. */
  files: readonly string[];
  inline?: string | undefined;
}

export type LoadedCert = { ref: CertRef; cert: X509Certificate } | { ref: CertRef; error: string };

const EXPIRY_WARNING_DAYS = 21;
const DAY_MS = 86_400_000;
const iso = (t: number): string => new Date(t).toISOString().replace('.000Z', 'Z');
const PEM = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/;

export function loadCertificate(ref: CertRef): LoadedCert {
  let text: string;
  try {
    text = ref.inline ?? ref.files.map((f) => readFileSync(f, 'utf8')).join('\n');
  } catch (err) {
    return { ref, error: `cannot read it: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` };
  }
  const pem = PEM.exec(text)?.[0];
  if (pem === undefined) return { ref, error: 'it holds no PEM certificate' };
  try {
    return { ref, cert: new X509Certificate(pem) };
  } catch (err) {
    return { ref, error: `its certificate does not parse: ${(err as Error).message}` };
  }
}

/** The key's size in bits and whether it is too weak; undefined for keys without a size (Ed25519). */
function keyStrength(cert: X509Certificate): { text: string; weak: boolean } | undefined {
  const key = cert.publicKey;
  const d = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'rsa' || key.asymmetricKeyType === 'rsa-pss' || key.asymmetricKeyType === 'dsa') {
    const bits = d.modulusLength ?? 0;
    return { text: `${key.asymmetricKeyType.toUpperCase()} ${bits} bits`, weak: bits < 2048 };
  }
  if (key.asymmetricKeyType === 'ec') {
    // Curve names carry their size: prime256v1, secp384r1, brainpoolP512r1.
    const bits = Number(/\d{3}/.exec(d.namedCurve ?? '')?.[0] ?? 0);
    return { text: `EC ${d.namedCurve ?? '?'} (${bits} bits)`, weak: bits < 256 };
  }
  return undefined;
}

export function checkCertificates(loaded: readonly LoadedCert[], now: number): Finding[] {
  const out: Finding[] = [];
  for (const l of loaded) {
    const files = l.ref.files.join(', ') || '(inline)';
    const reload = `then: ${l.ref.setting.startsWith('Postfix') ? 'postfix reload' : 'doveadm reload'}`;
    const where = `${l.ref.setting} ${files}`;
    if ('error' in l) {
      out.push({
        id: 'tls.cert-unreadable',
        severity: 'error',
        area: 'tls',
        message: `${where}: ${l.error}. Without its certificate the server offers no TLS, and passwords cross the network in clear or logins fail.`,
        fix: `point ${l.ref.setting} at the PEM file of the server's certificate, ${reload}`,
      });
      continue;
    }
    const c = l.cert;
    const from = new Date(c.validFrom).getTime();
    const to = new Date(c.validTo).getTime();
    const renew = `renew the certificate in ${files} (certbot renew, or your CA), ${reload}`;
    if (now < from || now > to) {
      out.push({
        id: 'tls.cert-expired',
        severity: 'error',
        area: 'tls',
        message: `${where}: the certificate is valid from ${iso(from)} to ${iso(to)}, not now. Clients that check certificates refuse to log in, and users learn to click through warnings.`,
        fix: renew,
      });
    } else if (to - now < EXPIRY_WARNING_DAYS * DAY_MS) {
      out.push({
        id: 'tls.cert-expiring',
        severity: 'warning',
        area: 'tls',
        message: `${where}: the certificate expires on ${iso(to)}, in ${Math.floor((to - now) / DAY_MS)} day(s) (less than ${EXPIRY_WARNING_DAYS}); automatic renewal seems not to run.`,
        fix: renew,
      });
    }
    const key = keyStrength(c);
    if (key?.weak) {
      out.push({
        id: 'tls.cert-weak-key',
        severity: 'error',
        area: 'tls',
        message: `${where}: the certificate's key is ${key.text}, below RSA 2048 or EC 256 bits; it can be broken, and current clients refuse it.`,
        fix: `issue a new certificate with an RSA key of at least 2048 bits (openssl req -newkey rsa:3072 …) or an EC P-256 key, ${reload}`,
      });
    }
  }
  return out;
}
