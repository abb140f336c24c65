/*
 * engine/policy — the compiled policy the engine runs: rules with every default
 * filled in, durations in milliseconds, networks pre-parsed. Built once per
 * (re)load by config/compile.ts; the engine never reads YAML.
 */
import type { NetworkSet } from './address.js';
import type { Locale, LocalText } from './messages.js';
import type { Action, BanScope, Escalation, EventKind, SubjectKind } from './types.js';

export type DistinctField = 'pwhash' | 'ip' | 'network' | 'user' | 'recipient_domain';
export type CountKind = 'events' | 'recipients' | 'messages' | 'bytes' | 'failures' | `distinct:${DistinctField}`;

export interface RuleThen {
  action: Action;
  /** For `delay`: seconds the client is held back. */
  delaySeconds: number;
  /** Text shown to the client, one for every locale or one per locale; a neutral default is used when empty. */
  message: LocalText;
  /** Ban the source (its address or its network) when the rule fires. */
  ban?: BanScope | undefined;
  /** Suspend the authenticated user for this long when the rule fires. */
  suspendMs?: number | undefined;
  /** Alert the administrator (email, webhook) when the rule fires. */
  notify: boolean;
}

/** Another rule's counter, read (never charged) by a detector rule. */
export interface CounterRef {
  rule: string;
  count: CountKind;
  windowMs: number;
  /** The counted rule's limit: a rate counter's count depends on it. */
  limit: number;
}

/** Fire when the count in the window exceeds max(floor, factor × the subject's own usual rate). */
export interface Baseline {
  factor: number;
  floor: number;
  /** Time constant of the exponentially weighted usual rate (half-life / ln 2). */
  tauMs: number;
}

export interface Rule {
  name: string;
  description: string;
  /** `observe`: count and report, never act. */
  mode: 'enforce' | 'observe';
  /** Events this rule counts. */
  on: readonly EventKind[];
  /** Events on which this rule only checks its counter (would one more exceed it?). */
  checkOn: readonly EventKind[];
  key: SubjectKind;
  count: CountKind;
  limit: number;
  windowMs: number;
  when: {
    authenticated?: boolean | undefined;
    context?: readonly string[] | undefined;
    protocol?: readonly string[] | undefined;
    /** For auth-result: count only checked failures (false) or only successes (true). */
    success?: boolean | undefined;
    /**
     * For auth-result: count only attempts the policy refused (true). Unset or false: only
     * results whose password was checked; a refused attempt is never a guess.
     */
    refused?: boolean | undefined;
    /** Count and act only when the client address is (true) or is not (false) a shared address. */
    shared?: boolean | undefined;
    /**
     * DNSBL (`event.listed`): count and act only for a client whose score reaches `dnsbl.threshold` (true),
     * for one whose score does not (false), or for one that one of these zones lists.
     */
    listed?: boolean | readonly string[] | undefined;
    /**
     * For auth-result: count only results with (true) or without (false) a password fingerprint.
     * A failure read from a log has none: it counts as a failure, never as a distinct password.
     */
    pwhash?: boolean | undefined;
  };
  /** Fire only when the count came from at least this many client addresses (login results only). */
  minAddresses?: number | undefined;
  then: RuleThen;
  /** Do not act against a source the user has logged in from successfully before (known-good). */
  exceptKnownGood: boolean;
  /** Per-subject limits: a user or address, or `@domain` for every user of a domain. */
  overrides: ReadonlyMap<string, number>;
  /** Detector rules: read this rule's counter instead of keeping their own; fire at count ≥ limit. */
  uses?: CounterRef | undefined;
  baseline?: Baseline | undefined;
}

export interface Policy {
  /** The language of what mail users are told, where their protocol can carry it (engine/messages.ts). */
  locale: Locale;
  ipv4Prefix: number;
  ipv6Prefix: number;
  allowNetworks: NetworkSet;
  allowUsers: ReadonlySet<string>;
  /** How bans last and grow for repeat offenders. */
  escalation: Escalation;
  /** IPv6: ban the covering prefix when `threshold` bans fall inside it. */
  ipv6Aggregate: { enabled: boolean; prefix: number; threshold: number };
  suspensionMs: number;
  /** A suspended user is also refused at login (Dovecot), not only when sending. */
  suspensionBlocksLogin: boolean;
  /** How long a successful login makes its network known-good for that user (0: off). */
  knownGood: { windowMs: number };
  /**
   * An address from which at least `minUsers` different users logged in successfully within
   * the window is shared (office NAT, campus, carrier): guessing from it is limited per
   * account, not by banning the address (`when.shared`). minUsers 0: off.
   */
  shared: { minUsers: number; windowMs: number };
  /** DNS blocklists: the zones dns/dnsbl.ts asks about each client and the score that makes it listed. */
  dnsbl: { zones: readonly DnsblZone[]; threshold: number };
  rules: readonly Rule[];
}

/** A blocklist and what its answers weigh: `weight` for any answer code within `codes` (IPv4 ranges as numbers). */
export interface DnsblZone {
  zone: string;
  weight: number;
  codes: ReadonlyArray<readonly [number, number]>;
}
