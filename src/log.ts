/*
 * log — the daemon's structured logger (pino, JSON lines on stdout).
 * Nothing that holds a password or password hash is ever passed to it; the
 * redaction list is a second line of defence for fields an adapter might add.
 */
import { pino, type Logger } from 'pino';

export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { name: 'mailwarden' },
    redact: {
      paths: ['password', 'pwhash', '*.password', '*.pwhash', 'req.headers.authorization'],
      censor: '[redacted]',
    },
  });
}
