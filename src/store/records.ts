/*
 * store/records — what a ban, suspension or counter read back from storage
 * must look like before it is enforced or shown. SQLite rows and Redis hashes
 * can be edited by hand, written by another version, or damaged; one
 * unreadable time must never make a decision throw, a list crash, or a ban
 * silently stop holding.
 *
 * A ban or suspension whose subject is no address or network (or no user) is
 * skipped: it could never match. Any other one is repaired, never dropped, so
 * a ban in force stays in force: an end that is unreadable or more than
 * MAX_DURATION_MS away becomes now + MAX_DURATION_MS, a start after the end
 * becomes the earlier of now and the end, an offence is a whole number from 1
 * to a million. A counter that cannot be read starts again from zero (that
 * only forgets). Every repair is described, for the caller to log.
 */
import { parseSubject } from '../engine/address.js';
import { MAX_DURATION_MS, MAX_DURATION_TEXT, type BanRecord, type SuspensionRecord } from '../engine/types.js';
import type { Usual } from './counting.js';
import { DistinctSet } from './distinct-set.js';

const MAX_OFFENCE = 1_000_000;

export interface Checked<T> {
  /** The record as it may be used; undefined when it was skipped. */
  rec: T | undefined;
  /** What was wrong with it; empty for a sound record. */
  problems: string[];
}

/** The fields of a record as they came out of storage (numbers may be strings, anything may be missing). */
export type RawRecord = Readonly<Record<string, unknown>>;

const text = (v: unknown): string =>
  typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'bigint' ? String(v) : '';
const shown = (v: unknown): string => (typeof v === 'string' ? JSON.stringify(v) : String(v));

function times(
  raw: RawRecord | BanRecord | SuspensionRecord,
  now: number,
  problems: string[],
): { since: number; until: number } {
  const latest = now + MAX_DURATION_MS;
  let until = Number(raw.until);
  if (!Number.isFinite(until)) {
    problems.push(`until ${shown(raw.until)} is not a time; kept in force for ${MAX_DURATION_TEXT}`);
    until = latest;
  } else if (until > latest) {
    problems.push(`until ${until} is more than ${MAX_DURATION_TEXT} away; shortened to ${MAX_DURATION_TEXT}`);
    until = latest;
  }
  let since = Number(raw.since);
  if (!Number.isFinite(since) || since > until) {
    problems.push(`since ${shown(raw.since)} is not a time before its end; read as now`);
    since = Math.min(now, until);
  }
  return { since, until };
}

export function checkBan(raw: RawRecord | BanRecord, now: number): Checked<BanRecord> {
  const problems: string[] = [];
  const parsed = typeof raw.subject === 'string' ? parseSubject(raw.subject) : undefined;
  if (!parsed) return { rec: undefined, problems: [`subject ${shown(raw.subject)} is not an IP address or network`] };
  if (parsed.text !== raw.subject) problems.push(`subject ${shown(raw.subject)} read as ${parsed.text}`);
  const { since, until } = times(raw, now, problems);
  let offence = Number(raw.offence);
  if (!Number.isInteger(offence) || offence < 1 || offence > MAX_OFFENCE) {
    problems.push(`offence ${shown(raw.offence)} is not a count from 1 to ${MAX_OFFENCE}`);
    offence = Number.isFinite(offence) ? Math.min(MAX_OFFENCE, Math.max(1, Math.round(offence))) : 1;
  }
  return {
    rec: {
      subject: parsed.text,
      since,
      until,
      rule: text(raw.rule),
      reason: text(raw.reason),
      offence,
      actor: text(raw.actor),
    },
    problems,
  };
}

export function checkSuspension(raw: RawRecord | SuspensionRecord, now: number): Checked<SuspensionRecord> {
  if (typeof raw.user !== 'string' || raw.user.trim() === '')
    return { rec: undefined, problems: [`user ${shown(raw.user)} is not a user name`] };
  const problems: string[] = [];
  const { since, until } = times(raw, now, problems);
  return {
    rec: { user: raw.user, since, until, rule: text(raw.rule), reason: text(raw.reason), actor: text(raw.actor) },
    problems,
  };
}

/** A counter snapshot row's value: a rate's TAT, a distinct set, or a usual rate. */
export type CounterValue = number | DistinctSet | Usual;

/**
 * A snapshot row as the counter table holds it, or undefined when it cannot be read (it then
 * starts again from zero). No counter reaches further ahead than the longest window allowed.
 */
export function checkCounter(
  row: { tat: unknown; members: unknown },
  now: number,
): { value: CounterValue | undefined; problem?: string } {
  const latest = now + MAX_DURATION_MS;
  if (row.tat !== null && row.tat !== undefined) {
    const tat = Number(row.tat);
    return Number.isFinite(tat) && tat <= latest
      ? { value: tat }
      : { value: undefined, problem: `rate ${shown(row.tat)} is not a time within ${MAX_DURATION_TEXT}` };
  }
  if (typeof row.members !== 'string') return { value: undefined, problem: 'neither a rate nor members' };
  let v: unknown;
  try {
    v = JSON.parse(row.members);
  } catch {
    return { value: undefined, problem: 'members are not JSON' };
  }
  if (Array.isArray(v)) {
    const set = new Map<string, number>();
    for (const m of v as unknown[]) {
      if (!Array.isArray(m) || typeof m[0] !== 'string') continue;
      const t = Number(m[1]);
      if (Number.isFinite(t) && t <= latest) set.set(m[0], t);
    }
    const members = DistinctSet.adopt(set);
    return set.size === v.length
      ? { value: members }
      : { value: members, problem: 'members with unreadable times dropped' };
  }
  const usual = (v as { usual?: unknown } | null)?.usual;
  if (Array.isArray(usual) && Number.isFinite(usual[0]) && Number.isFinite(usual[1]) && Number(usual[1]) <= latest)
    return { value: { r: Number(usual[0]), t: Number(usual[1]) } };
  return { value: undefined, problem: 'not a counter' };
}
