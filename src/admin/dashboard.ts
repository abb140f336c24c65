/*
 * admin/dashboard — the web dashboard: one HTML page and its assets, served
 * by the admin API itself (GET / and GET /assets/<name>, both public: the page
 * asks for the token and sends it on every API call).
 *
 * No bundler. The browser loads plain ES modules: ours from src/admin/static/
 * and preact, preact/hooks, htm and uPlot straight from node_modules, wired by
 * the import map in index.html. Everything comes from this origin; the CSP
 * says so, and admits the one inline script (the import map) by its hash.
 *
 * tsc does not copy src/admin/static/ to dist/, so the static folder is looked
 * up next to this module (src/admin/static when run through tsx) and then at
 * ../../src/admin/static (from dist/admin/dashboard.js).
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

interface Asset {
  file: string;
  type: string;
}

interface Loaded {
  body: Buffer;
  etag: string;
  mtimeMs: number;
}

/** The first candidate folder that holds index.html. */
function staticDir(): string | undefined {
  const candidates = [new URL('./static/', import.meta.url), new URL('../../src/admin/static/', import.meta.url)];
  for (const c of candidates) {
    const dir = fileURLToPath(c);
    if (existsSync(join(dir, 'index.html'))) return dir;
  }
  return undefined;
}

/** The root folder of an installed package, found from its entry point (some packages do not export package.json). */
function packageRoot(name: string): string {
  const require = createRequire(import.meta.url);
  let dir = dirname(require.resolve(name));
  for (;;) {
    const pj = join(dir, 'package.json');
    if (existsSync(pj) && (JSON.parse(readFileSync(pj, 'utf8')) as { name?: string }).name === name) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find the package folder of ${name}`);
    dir = up;
  }
}

/** Asset name → file: the vendored modules, then every file in the static folder. */
function assetTable(dir: string | undefined): Map<string, Asset> {
  const table = new Map<string, Asset>();
  const js = TYPES['.js'] as string;
  const vendored: Array<[string, string, string]> = [
    ['preact.mjs', 'preact', 'dist/preact.mjs'],
    ['preact-hooks.mjs', 'preact', 'hooks/dist/hooks.mjs'],
    ['htm.mjs', 'htm', 'dist/htm.mjs'],
    ['uplot.mjs', 'uplot', 'dist/uPlot.esm.js'],
    ['uplot.css', 'uplot', 'dist/uPlot.min.css'],
  ];
  for (const [asset, pkg, rel] of vendored) {
    table.set(asset, {
      file: join(packageRoot(pkg), rel),
      type: asset.endsWith('.css') ? (TYPES['.css'] as string) : js,
    });
  }
  if (dir) {
    for (const f of readdirSync(dir)) {
      const type = TYPES[extname(f)];
      if (type && /^[\w.-]+$/.test(f) && statSync(join(dir, f)).isFile()) table.set(f, { file: join(dir, f), type });
    }
  }
  return table;
}

/** The CSP for the page: this origin only, plus the inline import map by its hash. */
function policyFor(html: string): string {
  const hashes: string[] = [];
  for (const m of html.matchAll(/<script type="importmap">([\s\S]*?)<\/script>/g)) {
    hashes.push(
      `'sha256-${createHash('sha256')
        .update(m[1] ?? '')
        .digest('base64')}'`,
    );
  }
  return [
    "default-src 'self'",
    `script-src 'self'${hashes.length ? ` ${hashes.join(' ')}` : ''}`,
    "connect-src 'self'",
    "img-src 'self' data:",
    "style-src 'self' 'unsafe-inline'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join('; ');
}

export function registerDashboard(app: FastifyInstance): void {
  const dir = staticDir();
  const table = assetTable(dir);
  const cache = new Map<string, Loaded>();

  // Read once, again only when the file changes (an edited page shows on reload).
  const load = (file: string): Loaded => {
    const { mtimeMs } = statSync(file);
    let got = cache.get(file);
    if (!got || got.mtimeMs !== mtimeMs) {
      const body = readFileSync(file);
      got = { body, etag: `"${createHash('sha1').update(body).digest('base64url')}"`, mtimeMs };
      cache.set(file, got);
    }
    return got;
  };

  const common = (reply: FastifyReply, type: string, etag: string): FastifyReply =>
    reply
      .header('content-type', type)
      .header('cache-control', 'no-cache')
      .header('etag', etag)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer');

  app.get('/', async (req, reply) => {
    if (!dir)
      return reply.code(500).type('text/plain; charset=utf-8').send('dashboard files not found (src/admin/static)');
    const page = load(join(dir, 'index.html'));
    common(reply, TYPES['.html'] as string, page.etag)
      .header('content-security-policy', policyFor(page.body.toString('utf8')))
      .header('x-frame-options', 'DENY');
    if (req.headers['if-none-match'] === page.etag) return reply.code(304).send();
    return reply.send(page.body);
  });

  app.get<{ Params: { name: string } }>('/assets/:name', async (req, reply) => {
    const asset = table.get(req.params.name);
    if (!asset) return reply.code(404).send({ error: 'no such asset' });
    const got = load(asset.file);
    common(reply, asset.type, got.etag).header('content-security-policy', "default-src 'none'");
    if (req.headers['if-none-match'] === got.etag) return reply.code(304).send();
    return reply.send(got.body);
  });
}
