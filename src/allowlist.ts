/*
 * allowlist — the runtime allowlist: addresses, networks and users an administrator exempts
 * while the daemon runs (`mailwarden allow add`, the admin API, the dashboard). Entries are kept
 * in the data directory's SQLite file (store/sqlite.ts), audited, and added to the config
 * file's `allowlist` in the policy in force; an entry with an end drops out when it ends.
 *
 * Node-local, like the config file: in cluster mode each node keeps its own list.
 */
import { badRequest, conflict, notFound } from './admin/errors.js';
import { contains, NetworkSet, overlaps, parseSubject, tooBroad, type ParsedSubject } from './engine/address.js';
import type { Policy } from './engine/policy.js';
import type { BanRecord } from './engine/types.js';
import type { AllowRecord } from './store/types.js';

/** At most this many runtime entries: each is checked on every request (NetworkSet scans). */
export const MAX_RUNTIME_ENTRIES = 1000;

/** Longest delay a timer takes (node's setTimeout is 32-bit); a later end is looked at again then. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface AllowEntry extends Omit<AllowRecord, 'since'> {
  /** `config`: from the config file (changed there); `runtime`: added while running. */
  source: 'config' | 'runtime';
  /** When it was added; null for the config file's entries. */
  since: number | null;
}

/** What keeps the entries (the node's MemoryStore). */
export interface AllowlistStore {
  allowEntries(now: number): AllowRecord[];
  putAllow(rec: AllowRecord): void;
  dropAllow(subject: string, actor: string, now: number, reason: string): AllowRecord | undefined;
}

/** The config file's allowlist, and its compiled policy (without the runtime entries). */
export interface Configured {
  policy: Policy;
  allowlist: { networks: readonly string[]; users: readonly string[] };
}

export interface AddRequest {
  subject: string;
  reason?: string | undefined;
  durationMs?: number | undefined;
  force?: boolean | undefined;
}

/** A user name as the policy compares it, or a reason it cannot be one. */
function userName(raw: string): string {
  const user = raw.trim().toLowerCase();
  // What looks like an address or a network but did not parse is a typo, not a user.
  if (/^[\d.]+(\/\d*)?$|\//.test(user) || user.includes(':')) {
    throw badRequest(`${JSON.stringify(raw)} is not a valid IP address or CIDR network`);
  }
  // eslint-disable-next-line no-control-regex
  if (!user || user.length > 320 || /[\s\x00-\x1f\x7f]/.test(user)) {
    throw badRequest(`${JSON.stringify(raw)} is neither an IP address, a CIDR network nor a user name`);
  }
  return user;
}

/** The policy in force: the config's, with the runtime entries added to its allowlist. */
export function withRuntimeEntries(configured: Configured, entries: readonly AllowRecord[]): Policy {
  if (entries.length === 0) return configured.policy;
  const networks = entries.filter((e) => e.kind === 'network').map((e) => e.subject);
  const users = entries.filter((e) => e.kind === 'user').map((e) => e.subject);
  return {
    ...configured.policy,
    allowNetworks: new NetworkSet([...configured.allowlist.networks, ...networks]),
    allowUsers: new Set([...configured.policy.allowUsers, ...users]),
  };
}

export class RuntimeAllowlist {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: AllowlistStore,
    private readonly configured: () => Configured,
    /** Puts a new policy in force (the decider's). */
    private readonly apply: (policy: Policy) => void,
    private readonly now: () => number,
  ) {}

  /** Recomputes the policy in force (after a reload, a change, or an entry's end) and waits for the next end. */
  refresh(): void {
    const now = this.now();
    const entries = this.store.allowEntries(now);
    this.apply(withRuntimeEntries(this.configured(), entries));
    clearTimeout(this.timer);
    const ends = entries.flatMap((e) => (e.until === null ? [] : [e.until]));
    if (ends.length === 0) return;
    this.timer = setTimeout(() => this.refresh(), Math.min(MAX_TIMER_MS, Math.max(0, Math.min(...ends) - now) + 1));
    this.timer.unref();
  }

  /** The config file's entries, then the runtime ones. */
  list(): AllowEntry[] {
    const c = this.configured().allowlist;
    const fromConfig = (subject: string, kind: 'network' | 'user'): AllowEntry => ({
      subject,
      kind,
      source: 'config',
      since: null,
      until: null,
      reason: 'in the config file',
      actor: 'config',
    });
    return [
      ...c.networks.map((n) => fromConfig(parseSubject(n)?.text ?? n, 'network')),
      ...c.users.map((u) => fromConfig(u, 'user')),
      ...this.store.allowEntries(this.now()).map((e): AllowEntry => ({ ...e, source: 'runtime' })),
    ];
  }

  /**
   * Adds an entry (or replaces the runtime one of the same subject). Refused: a network wider
   * than IPv4 /8 or IPv6 /16 without force, a subject the config already allowlists, a full list.
   */
  add(req: AddRequest, actor: string): AllowEntry {
    const now = this.now();
    const net = parseSubject(req.subject);
    const subject = net ? net.text : userName(req.subject);
    const kind = net ? 'network' : 'user';
    if (net) {
      const broad = tooBroad(net);
      if (broad && !req.force) {
        throw badRequest(
          `${broad}; allowlisting it would switch off protection for all of them. Pass --force (CLI) or "force": true (API) if you mean it`,
        );
      }
    }
    const inConfig = this.inConfig(net, subject);
    if (inConfig) throw conflict(`${subject} is already allowlisted by the config file (${inConfig})`);
    const current = this.store.allowEntries(now);
    if (!current.some((e) => e.subject === subject) && current.length >= MAX_RUNTIME_ENTRIES) {
      throw conflict(
        `the runtime allowlist holds ${MAX_RUNTIME_ENTRIES} entries, its most; remove some, or list networks instead of addresses`,
      );
    }
    const rec: AllowRecord = {
      subject,
      kind,
      since: now,
      until: req.durationMs === undefined ? null : now + req.durationMs,
      reason: req.reason ?? 'allowlisted by an administrator',
      actor,
    };
    this.store.putAllow(rec);
    this.refresh();
    return { ...rec, source: 'runtime' };
  }

  /** Removes a runtime entry; a config entry is refused with where to change it. */
  remove(raw: string, actor: string, reason = 'removed from the allowlist by an administrator'): AllowRecord {
    const net = parseSubject(raw);
    const subject = net ? net.text : userName(raw);
    const gone = this.store.dropAllow(subject, actor, this.now(), reason);
    if (gone) {
      this.refresh();
      return gone;
    }
    const inConfig = this.inConfig(net, subject);
    if (inConfig) {
      throw conflict(
        `${subject} is allowlisted by the config file (${inConfig}); remove it there and reload (mailwarden reload)`,
      );
    }
    throw notFound(`${subject} is not on the runtime allowlist`);
  }

  /** The bans in force that share addresses with an allowlisted network: they stay, but no longer stop those. */
  static bansOverlapping(net: ParsedSubject, bans: readonly BanRecord[]): BanRecord[] {
    return bans.filter((b) => {
      const s = parseSubject(b.subject);
      return s !== undefined && overlaps(net, s);
    });
  }

  runtimeCount(): number {
    return this.store.allowEntries(this.now()).length;
  }

  close(): void {
    clearTimeout(this.timer);
  }

  /** Where the config file already allowlists this subject, if it does. */
  private inConfig(net: ParsedSubject | undefined, user: string): string | undefined {
    const c = this.configured();
    if (!net) return c.allowlist.users.includes(user) ? 'allowlist.users' : undefined;
    const holder = new NetworkSet(c.allowlist.networks).overlapping(net);
    return holder && contains(holder, net) ? `allowlist.networks: ${holder.text}` : undefined;
  }
}
