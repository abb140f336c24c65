/*
 * adapters/postfix/parse — the framing of Postfix's SMTPD access policy
 * delegation protocol: `name=value\n` lines, a request ends at an empty line.
 * (Postfix 3.7 sends 29 attributes, always all of them, never a CR; newer
 * releases add attributes, so unknown names are kept, not refused.)
 *
 * Trusts nothing: a line longer than `maxLine` is fatal for the connection
 * (framing can no longer be trusted); more than `maxAttributes` attributes, or
 * a line without `=`, spoils only that request, which is then answered with a
 * safe "no opinion".
 */

/** The attributes mailwarden reads; Postfix 3.7 sends 29, newer releases more. */
export interface PolicyAttributes {
  request?: string | undefined;
  protocol_state?: string | undefined;
  client_address?: string | undefined;
  client_port?: string | undefined;
  instance?: string | undefined;
  sender?: string | undefined;
  recipient?: string | undefined;
  recipient_count?: string | undefined;
  size?: string | undefined;
  sasl_username?: string | undefined;
  policy_context?: string | undefined;
}

const WANTED: ReadonlyArray<keyof PolicyAttributes> = [
  'request',
  'protocol_state',
  'client_address',
  'client_port',
  'instance',
  'sender',
  'recipient',
  'recipient_count',
  'size',
  'sasl_username',
  'policy_context',
];

/** The wanted names by length, so a line's name is compared with at most three of them. */
const WANTED_BY_LENGTH: Array<Array<keyof PolicyAttributes> | undefined> = [];
for (const name of WANTED) (WANTED_BY_LENGTH[name.length] ??= []).push(name);

function emptyAttributes(): PolicyAttributes {
  return {
    request: undefined,
    protocol_state: undefined,
    client_address: undefined,
    client_port: undefined,
    instance: undefined,
    sender: undefined,
    recipient: undefined,
    recipient_count: undefined,
    size: undefined,
    sasl_username: undefined,
    policy_context: undefined,
  };
}

export type ParsedItem =
  { ok: true; attrs: PolicyAttributes } | { ok: false; problem: string; attrs: PolicyAttributes };

export interface ParseLimits {
  maxLine: number;
  maxAttributes: number;
}

export class PolicyParser {
  private pending = '';
  private attrs: PolicyAttributes = emptyAttributes();
  private count = 0;
  private problem: string | undefined;
  private readonly limits: ParseLimits;

  constructor(limits: ParseLimits) {
    this.limits = limits;
  }

  /**
   * Feeds a chunk; returns complete requests. Throws a `FramingError` when a
   * line exceeds the limit (the caller closes the connection).
   */
  push(chunk: string): ParsedItem[] {
    const out: ParsedItem[] = [];
    let buf = this.pending.length ? this.pending + chunk : chunk;
    let start = 0;
    for (;;) {
      const nl = buf.indexOf('\n', start);
      if (nl < 0) break;
      let end = nl;
      if (end > start && buf.charCodeAt(end - 1) === 13) end--; // tolerate CRLF from hand-made clients
      if (end - start > this.limits.maxLine) throw new FramingError(`line longer than ${this.limits.maxLine} bytes`);
      if (end === start) {
        if (this.count > 0 || this.problem) out.push(this.finish());
      } else {
        this.line(buf, start, end);
      }
      start = nl + 1;
    }
    buf = start === 0 ? buf : buf.slice(start);
    if (buf.length > this.limits.maxLine) throw new FramingError(`line longer than ${this.limits.maxLine} bytes`);
    this.pending = buf;
    return out;
  }

  private line(buf: string, start: number, end: number): void {
    const eq = buf.indexOf('=', start);
    if (eq < 0 || eq >= end || eq === start) {
      this.problem ??= `malformed line ${JSON.stringify(buf.slice(start, Math.min(end, start + 60)))}`;
      return;
    }
    if (this.count >= this.limits.maxAttributes) {
      this.problem ??= `more than ${this.limits.maxAttributes} attributes`;
      return;
    }
    // Match the name in place: slicing all 29 names of every request would be garbage.
    const candidates = WANTED_BY_LENGTH[eq - start];
    if (candidates !== undefined) {
      for (const name of candidates) {
        if (buf.startsWith(name, start)) {
          this.attrs[name] = buf.slice(eq + 1, end);
          break;
        }
      }
    }
    this.count++;
  }

  private finish(): ParsedItem {
    const attrs = this.attrs;
    const problem = this.problem;
    this.attrs = emptyAttributes();
    this.count = 0;
    this.problem = undefined;
    return problem === undefined ? { ok: true, attrs } : { ok: false, problem, attrs };
  }

  /** Bytes received but not yet part of a complete request (for half-open/idle diagnostics). */
  get buffered(): number {
    return this.pending.length + this.count;
  }
}

export class FramingError extends Error {
  override name = 'FramingError';
}
