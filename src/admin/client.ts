/*
 * admin/client — how the CLI talks to a running daemon: HTTP over the admin
 * unix socket in the data dir. Errors come back as one readable sentence
 * (daemon not running, permission denied, or the API's own message).
 */
import { request } from 'node:http';
import { userInfo } from 'node:os';

export class AdminError extends Error {
  override name = 'AdminError';
  readonly status: number;
  constructor(message: string, status: number) {
    super(message);
    this.status = status;
  }
}

export async function call<T>(socketPath: string, method: string, path: string, body?: unknown): Promise<T> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  let actor = 'cli';
  try {
    actor = `cli:${userInfo().username}`;
  } catch {
    // no passwd entry (containers): plain "cli"
  }
  return new Promise<T>((resolve, reject) => {
    const req = request(
      {
        socketPath,
        method,
        path,
        headers: {
          'x-mailwarden-actor': actor,
          ...(payload === undefined
            ? {}
            : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
        },
        timeout: 10_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          let data: unknown;
          try {
            data = text ? JSON.parse(text) : undefined;
          } catch {
            data = text;
          }
          const status = res.statusCode ?? 0;
          if (status >= 400) {
            const msg = (data as { error?: string } | undefined)?.error ?? `HTTP ${status}`;
            reject(new AdminError(msg, status));
          } else resolve(data as T);
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('the daemon did not answer within 10 s')));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
        reject(
          new AdminError(`mailwarden is not running (no daemon at ${socketPath}); start it with: mailwarden serve`, 0),
        );
      } else if (err.code === 'EACCES') {
        reject(new AdminError(`permission denied on ${socketPath}; run as the user that runs the daemon (or root)`, 0));
      } else reject(new AdminError(err.message, 0));
    });
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}
