// The mailwarden dashboard: preact + htm, plain ES modules, no build step.
// Every API call carries the admin token (kept in sessionStorage); a 401
// anywhere signs out and says why. Every word on screen comes from i18n.js.
import { h, render } from 'preact';
import { useCallback, useEffect, useMemo, useRef, useState } from 'preact/hooks';
import htm from 'htm';
import uPlot from 'uplot';
import { fmtClock, fmtNum, fmtRelative, fmtSpan, fmtTime, locale, setLocale, t, template } from './i18n.js';

const html = htm.bind(h);

const TOKEN_KEY = 'mailwarden.token';
/** The daemon's locale as last seen, so the sign-in page (before any status) speaks it too. */
const LOCALE_KEY = 'mailwarden.locale';
const REFRESH_MS = 10_000;
const FEED_MAX = 200;

// ---------------------------------------------------------------- API access

class Unauthorized extends Error {}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Set by <App>: what a 401 from any call does (sign out, with a message). */
let onUnauthorized = () => {};

async function api(token, path, init = {}) {
  const res = await fetch(path, {
    ...init,
    cache: 'no-store',
    headers: { accept: 'application/json', ...(init.headers ?? {}), authorization: `Bearer ${token}` },
  });
  if (res.status === 401) {
    onUnauthorized();
    throw new Unauthorized('unauthorized');
  }
  const text = await res.text();
  let body = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = { error: text };
    }
  }
  if (!res.ok) throw new ApiError(res.status, body?.error ?? `${res.status} ${res.statusText}`);
  return body;
}

const post = (body) => ({
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body),
});

/** The API refused because the subject is so wide (or holds allowlisted addresses) that it needs `force`. */
const needsForce = (err) =>
  err instanceof ApiError && (err.status === 400 || err.status === 409) && /"force": true/.test(err.message);

/** The API's own words for a refusal, with its status; anything else as it came. */
const refusal = (err) => (err instanceof ApiError ? `${err.status}: ${err.message}` : err.message || String(err));

/**
 * Reads /v1/events (server-sent events) with fetch, since EventSource cannot
 * send the Authorization header. Calls onEvent for each JSON object; resolves
 * when the server ends the stream.
 */
async function readEvents(token, signal, onOpen, onEvent) {
  const res = await fetch('/v1/events', {
    signal,
    cache: 'no-store',
    headers: { accept: 'text/event-stream', authorization: `Bearer ${token}` },
  });
  if (res.status === 401) {
    onUnauthorized();
    throw new Unauthorized('unauthorized');
  }
  if (!res.ok || !res.body) throw new ApiError(res.status, `/v1/events: ${res.status} ${res.statusText}`);
  onOpen();
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let data = [];
  const flush = () => {
    if (data.length === 0) return;
    try {
      onEvent(data.join('\n'));
      data = [];
    } catch {
      // not a whole JSON object yet: wait for more data lines or the blank line
    }
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      let line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        flush();
        data = [];
      } else if (line.startsWith('data:')) {
        data.push(line.slice(line[5] === ' ' ? 6 : 5));
        flush();
      }
      // comments (":" heartbeats), event:, id: and retry: lines are not needed
    }
  }
}

// ---------------------------------------------------------------- formatting

/** A translated text whose {placeholders} are elements (links, code), not only strings. */
function tx(key, parts) {
  return template(key)
    .split(/\{(\w+)\}/)
    .map((piece, i) => (i % 2 ? (parts[piece] ?? '') : piece));
}

const ISO_TIME = /\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z\b/g;
/** Evidence fields that hold a moment (epoch ms, or ISO text). */
const TIME_FIELD = /^(time|since|until|at|expires)$/;

/** One evidence value: moments as local date-times, nested records in braces. */
function evidenceValue(key, v) {
  if (v === null) return key === 'until' ? t('time.noEnd') : 'null';
  if (Array.isArray(v)) return v.map((x) => evidenceValue('', x)).join(', ');
  if (typeof v === 'object') return `{${fmtEvidence(v)}}`;
  if (TIME_FIELD.test(key)) {
    const ms = typeof v === 'number' ? v : Date.parse(String(v));
    if (Number.isFinite(ms)) return fmtTime(ms);
  }
  return String(v);
}

/** Nested evidence as `key=value` pairs. */
function fmtEvidence(ev) {
  return Object.entries(ev)
    .map(([k, v]) => `${k}=${evidenceValue(k, v)}`)
    .join(' ');
}

/** Audit evidence: one `key value` pair a piece, so a date-time's space does not run into the next pair. */
function Evidence({ ev }) {
  if (!ev || typeof ev !== 'object') return '';
  return html`<span class="evidence"
    >${Object.entries(ev).map(([k, v]) => html`<span class="ev" key=${k}><b>${k}</b> ${evidenceValue(k, v)}</span> `)}</span
  >`;
}

const explainHref = (subject) => `#/explain/${encodeURIComponent(subject)}`;

// ---------------------------------------------------------------- hooks

/** The current hash route, e.g. ['bans'] or ['explain', '203.0.113.9']. */
function useRoute() {
  const parse = () => {
    const raw = location.hash.replace(/^#\/?/, '');
    const [name, ...rest] = raw.split('/');
    return [name || 'overview', rest.length ? decodeURIComponent(rest.join('/')) : ''];
  };
  const [route, setRoute] = useState(parse);
  useEffect(() => {
    const on = () => setRoute(parse());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

/** Loads fn() now, whenever deps change, and every `every` ms; keeps the last good data on errors. */
function usePoll(fn, deps, every = REFRESH_MS) {
  const [state, setState] = useState({ data: null, error: null, loaded: false });
  const seq = useRef(0);
  const load = useCallback(async () => {
    const mine = ++seq.current;
    try {
      const data = await fn();
      if (mine === seq.current) setState({ data, error: null, loaded: true });
    } catch (error) {
      if (error instanceof Unauthorized) return;
      if (mine === seq.current) setState((s) => ({ data: s.data, error, loaded: true }));
    }
  }, deps);
  useEffect(() => {
    load();
    if (!every) return undefined;
    const id = setInterval(() => {
      if (!document.hidden) load();
    }, every);
    return () => {
      clearInterval(id);
      seq.current++;
    };
  }, [load, every]);
  return [state, load];
}

/** The live event feed: connected while signed in, reconnecting with backoff. Newest first. */
function useEventFeed(token) {
  const [events, setEvents] = useState([]);
  const [link, setLink] = useState('connecting');
  const paused = useRef(false);
  const [isPaused, setPaused] = useState(false);
  useEffect(() => {
    if (!token) return undefined;
    const ctl = new AbortController();
    let n = 0;
    (async () => {
      let backoff = 1000;
      while (!ctl.signal.aborted) {
        try {
          setLink('connecting');
          await readEvents(
            token,
            ctl.signal,
            () => {
              setLink('live');
              backoff = 1000;
            },
            (raw) => {
              const ev = JSON.parse(raw);
              if (paused.current) return;
              const row = { ...ev, _id: ++n, _raw: raw, time: typeof ev.time === 'number' ? ev.time : Date.now() };
              // A reconnection starts with the daemon's recent events again: those already shown are not new rows.
              setEvents((old) => (old.some((o) => o._raw === raw) ? old : [row, ...old].slice(0, FEED_MAX)));
            },
          );
        } catch (err) {
          if (ctl.signal.aborted || err instanceof Unauthorized) return;
          if (err instanceof ApiError && err.status === 404) {
            setLink('unavailable');
            return;
          }
        }
        if (ctl.signal.aborted) return;
        setLink('down');
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 30_000);
      }
    })();
    return () => ctl.abort();
  }, [token]);
  const setPause = useCallback((p) => {
    paused.current = p;
    setPaused(p);
  }, []);
  const clear = useCallback(() => setEvents([]), []);
  return { events, link, paused: isPaused, setPause, clear };
}

/**
 * An administrator's actions and what became of them, then `after` (reload what they changed).
 * run(work, ok, failed) awaits work() and shows ok or failed(err); report(text) tells of an
 * action a form has made.
 */
function useAction(after) {
  const [notice, setNotice] = useState(null);
  const run = useCallback(
    async (work, ok, failed = (err) => t('action.failed', { error: refusal(err) })) => {
      try {
        await work();
        setNotice({ ok: true, text: ok });
      } catch (err) {
        if (err instanceof Unauthorized) return;
        setNotice({ ok: false, text: failed(err) });
      }
      after();
    },
    [after],
  );
  const report = useCallback(
    (text) => {
      setNotice({ ok: true, text });
      after();
    },
    [after],
  );
  return { notice, run, report };
}

// ---------------------------------------------------------------- small parts

function Problem({ error, what }) {
  if (!error) return null;
  return html`<p class="problem" role="alert">${t('problem.load', { what, error: refusal(error) })}</p>`;
}

function Notice({ notice }) {
  if (!notice) return null;
  return html`<p class=${notice.ok ? 'notice' : 'problem'} role="status">${notice.text}</p>`;
}

function Empty({ children }) {
  return html`<p class="empty">${children}</p>`;
}

function SubjectLink({ subject }) {
  if (!subject) return html`<span class="muted">—</span>`;
  return html`<a class="subject" href=${explainHref(subject)} title=${t('explain.title', { subject })}>${subject}</a>`;
}

/** A moment: the local date-time, and how long ago or ahead. */
function When({ ms }) {
  if (ms === null || ms === undefined) return html`<span class="when">${t('time.noEnd')}</span>`;
  return html`<span class="when"
    ><span class="date">${fmtTime(ms)}</span> <span class="rel">${fmtRelative(ms)}</span></span
  >`;
}

/** Server text (reasons) can hold ISO times (UTC): shown as local date-times like every other. */
const readable = (text) => (text ? String(text).replace(ISO_TIME, (iso) => fmtTime(Date.parse(iso))) : '');

function Badge({ kind, children }) {
  return html`<span class=${`badge badge-${kind}`}>${children ?? t(`badge.${kind}`)}</span>`;
}

/** A button whose action asks first, on the spot: the question, Yes and Cancel, in place of the button. */
function Confirm({ label, question, yes, onYes, cls = 'danger' }) {
  const [asking, setAsking] = useState(false);
  const [busy, setBusy] = useState(false);
  if (!asking) return html`<button class=${cls} onClick=${() => setAsking(true)}>${label}</button>`;
  const go = async () => {
    setBusy(true);
    await onYes();
    setBusy(false);
    setAsking(false);
  };
  return html`<span class="confirm" role="group">
    <span class="question">${question}</span>
    <span class="confirm-buttons">
      <button class=${cls} data-confirm="yes" disabled=${busy} onClick=${go}>${yes}</button>
      <button data-confirm="no" disabled=${busy} onClick=${() => setAsking(false)}>${t('action.cancel')}</button>
    </span>
  </span>`;
}

/**
 * A table that turns into one card per row on a narrow screen: each cell carries its column's
 * name (data-label) for the card to show. columns: [{ label, cell(row), cls? }].
 */
function DataTable({ id, cls = '', columns, rows, rowKey, rowAttrs = () => ({}) }) {
  return html`<div class="table-wrap">
    <table class=${`grid ${cls}`} id=${id}>
      <thead>
        <tr>
          ${columns.map((c, i) => html`<th key=${i} class=${c.cls}>${c.label}</th>`)}
        </tr>
      </thead>
      <tbody>
        ${rows.map(
          (r) =>
            html`<tr key=${rowKey(r)} ...${rowAttrs(r)}>
              ${columns.map((c, i) => {
                const content = c.cell(r);
                // an empty cell is left out of a row's card on a phone
                const cls = [c.cls, content === '' || content == null ? 'blank' : ''].filter(Boolean).join(' ');
                return html`<td key=${i} class=${cls} data-label=${c.label}><div class="cell">${content}</div></td>`;
              })}
            </tr>`,
        )}
      </tbody>
    </table>
  </div>`;
}

/**
 * A form that makes one API call. fields: [{ name, label, placeholder?, hint?, required? }].
 * The API's refusal is shown in its own words; when it says the subject needs `force`, and only
 * then, a Force checkbox appears, sent as `force: true` once ticked.
 */
function EntryForm({ id, title, fields, submit, send, onDone, onCancel }) {
  const blank = () => Object.fromEntries(fields.map((f) => [f.name, '']));
  const [values, setValues] = useState(blank);
  const [force, setForce] = useState(null);
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const go = async (e) => {
    e.preventDefault();
    const body = {};
    for (const f of fields) if (values[f.name].trim()) body[f.name] = values[f.name].trim();
    if (force) body.force = true;
    setBusy(true);
    setError('');
    try {
      const res = await send(body);
      setValues(blank());
      setForce(null);
      onDone(res);
    } catch (err) {
      if (err instanceof Unauthorized) return;
      setError(refusal(err));
      if (needsForce(err)) setForce((f) => f ?? false);
    } finally {
      setBusy(false);
    }
  };
  return html`<form class="card entry" id=${id} onSubmit=${go}>
    ${title && html`<h3>${title}</h3>`}
    <div class="fields">
      ${fields.map(
        (f) =>
          html`<label key=${f.name} class="field">
            <span>${f.label}</span>
            <input
              name=${f.name}
              required=${f.required}
              placeholder=${f.placeholder ?? ''}
              value=${values[f.name]}
              onInput=${(e) => setValues({ ...values, [f.name]: e.currentTarget.value })}
            />
            ${f.hint && html`<small>${f.hint}</small>`}
          </label>`,
      )}
    </div>
    ${error && html`<p class="problem" role="alert" data-refusal>${t('form.refused', { error })}</p>`}
    ${
      force !== null &&
      html`<label class="force"
        ><input type="checkbox" name="force" checked=${force} onChange=${(e) => setForce(e.currentTarget.checked)} />
        ${t('form.force')}</label
      >`
    }
    <div class="form-buttons">
      <button type="submit" class="primary" disabled=${busy}>${submit}</button>
      ${onCancel && html`<button type="button" onClick=${onCancel}>${t('action.cancel')}</button>`}
    </div>
  </form>`;
}

const durationField = (hint) => ({ name: 'duration', label: t('field.duration'), placeholder: '30m, 2h, 7d', hint });
const reasonField = () => ({ name: 'reason', label: t('field.reason'), placeholder: t('field.reasonPlaceholder') });

/** Bans `subject` (or the one typed, when not given). */
function BanForm({ call, subject, onDone, onCancel }) {
  const fields = [
    ...(subject
      ? []
      : [{ name: 'subject', label: t('field.subject'), placeholder: '203.0.113.7, 198.51.100.0/24', required: true }]),
    durationField(t('field.banDurationHint')),
    reasonField(),
  ];
  return html`<${EntryForm}
    id="ban-form"
    title=${subject ? t('bans.addFor', { subject }) : t('bans.add')}
    fields=${fields}
    submit=${t('bans.submit')}
    send=${(body) => call('/v1/bans', post({ ...body, subject: subject ?? body.subject }))}
    onDone=${onDone}
    onCancel=${onCancel}
  />`;
}

/** Suspends `user` (or the one typed, when not given). */
function SuspendForm({ call, user, onDone, onCancel }) {
  const fields = [
    ...(user ? [] : [{ name: 'user', label: t('field.user'), placeholder: 'alice@example.org', required: true }]),
    durationField(t('field.suspendDurationHint')),
    reasonField(),
  ];
  const send = ({ user: typed, ...body }) => call(`/v1/users/${encodeURIComponent(user ?? typed)}/suspend`, post(body));
  return html`<${EntryForm}
    id="suspend-form"
    title=${user ? t('users.suspendFor', { user }) : t('users.suspend')}
    fields=${fields}
    submit=${t('users.submit')}
    send=${send}
    onDone=${onDone}
    onCancel=${onCancel}
  />`;
}

/** A button that opens form(close) in its place. */
function Opener({ label, form }) {
  const [open, setOpen] = useState(false);
  if (!open) return html`<button class="primary opener" onClick=${() => setOpen(true)}>${label}</button>`;
  return form(() => setOpen(false));
}

// ---------------------------------------------------------------- sign-in

function SignIn({ message, onToken }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const token = value.trim();
    if (!token) {
      setError(t('signin.empty'));
      return;
    }
    setBusy(true);
    setError('');
    try {
      const res = await fetch('/v1/status', { cache: 'no-store', headers: { authorization: `Bearer ${token}` } });
      if (res.status === 401) setError(t('signin.refused'));
      else if (!res.ok) setError(t('signin.status', { status: `${res.status} ${res.statusText}` }));
      else onToken(token);
    } catch (err) {
      setError(t('signin.unreachable', { error: err.message }));
    } finally {
      setBusy(false);
    }
  };
  const shown = error || message;
  return html`
    <main class="signin">
      <form class="card signin-card" onSubmit=${submit}>
        <h1><span class="logo">◆</span> mailwarden</h1>
        <p class="muted">${tx('signin.intro', { file: html`<code>${'<data dir>/admin.token'}</code>` })}</p>
        ${shown && html`<p class="problem" role="alert" id="signin-error">${shown}</p>`}
        <label for="token">${t('signin.token')}</label>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="current-password"
          autofocus
          value=${value}
          onInput=${(e) => setValue(e.currentTarget.value)}
        />
        <button type="submit" class="primary" disabled=${busy}>
          ${busy ? t('signin.checking') : t('signin.submit')}
        </button>
        <p class="fine">${t('signin.fine')}</p>
      </form>
    </main>
  `;
}

// ---------------------------------------------------------------- charts

const COLORS = {
  'decisions.allow': '#2f9e44',
  'decisions.delay': '#f0a202',
  'decisions.tempfail': '#e8590c',
  'decisions.reject': '#e03131',
  'decisions.hold': '#7048e8',
  'auth_failures.imap': '#1971c2',
  'auth_failures.pop3': '#0c8599',
  'auth_failures.smtp': '#c2255c',
  'auth_failures.other': '#868e96',
  flow_limit_hits: '#862e9c',
};
const SPARE = ['#495057', '#5c940d', '#364fc7', '#a61e4d', '#d9480f'];

/** The timeline series whose names start with `prefix`, in a stable order. */
function seriesFor(timeline, prefix) {
  if (!timeline?.series) return [];
  const known = Object.keys(COLORS);
  const names = Object.keys(timeline.series).filter((k) => k === prefix || k.startsWith(`${prefix}.`));
  return names.sort((a, b) => {
    const ia = known.indexOf(a);
    const ib = known.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
}

/** A series' name in the legend: decisions by their action, protocols as they are, the rest translated. */
function seriesLabel(n) {
  if (n.startsWith('decisions.')) return t(`badge.${n.slice(10)}`);
  if (n.startsWith('auth_failures.')) return n === 'auth_failures.other' ? t('chart.other') : n.slice(14);
  return t('chart.flow');
}

function Chart({ title, timeline, prefix }) {
  const box = useRef(null);
  const plot = useRef(null);
  const names = useMemo(() => seriesFor(timeline, prefix), [timeline, prefix]);
  const data = useMemo(() => {
    if (!timeline || names.length === 0) return null;
    const len = Math.max(...names.map((n) => timeline.series[n].length));
    const xs = Array.from({ length: len }, (_, i) => timeline.start + i * timeline.step);
    return [xs, ...names.map((n) => timeline.series[n])];
  }, [timeline, names]);
  const nonZero = data ? data.slice(1).reduce((a, s) => a + s.filter((v) => v > 0).length, 0) : 0;
  // the legend's words are fixed when the plot is made: a new language makes a new plot
  const key = `${locale()}:${names.join(',')}`;

  useEffect(() => {
    if (!data || !box.current) return;
    if (plot.current && plot.current._key === key) {
      plot.current.setData(data);
      return;
    }
    plot.current?.destroy();
    const opts = {
      width: Math.max(240, box.current.clientWidth),
      height: 190,
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(4, Math.ceil(max * 1.15))] } },
      axes: [
        {
          stroke: '#6b7280',
          grid: { stroke: '#eef0f3' },
          ticks: { stroke: '#e5e7eb' },
          values: (_u, splits) => splits.map((v) => fmtClock(v * 1000).slice(0, 5)),
        },
        { stroke: '#6b7280', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#e5e7eb' }, size: 44 },
      ],
      cursor: { drag: { x: true, y: false } },
      series: [
        // Not hovering, the legend shows each series' total for the hour; hovering, the value at that step.
        { label: t('chart.time'), value: (_u, v) => (v == null ? t('chart.lastHour') : fmtClock(v * 1000)) },
        ...names.map((n, i) => {
          const color = COLORS[n] ?? SPARE[i % SPARE.length];
          return {
            label: seriesLabel(n),
            stroke: color,
            width: 1.5,
            fill: `${color}14`,
            value: (u, v, si, idx) =>
              idx == null ? fmtNum(u.data[si].reduce((a, b) => a + (b || 0), 0)) : fmtNum(v ?? 0),
            // a dot on every step with activity; the quiet zero line stays a line
            points: {
              show: true,
              size: 5,
              fill: color,
              stroke: color,
              filter: (u, si) => {
                const out = [];
                const ys = u.data[si];
                for (let j = 0; j < ys.length; j++) if (ys[j] > 0) out.push(j);
                return out;
              },
            },
          };
        }),
      ],
    };
    plot.current = new uPlot(opts, data, box.current);
    plot.current._key = key;
  }, [data, key]);

  useEffect(() => {
    const el = box.current;
    const ro = new ResizeObserver(() => {
      if (plot.current && el) plot.current.setSize({ width: Math.max(240, el.clientWidth), height: 190 });
    });
    if (el) ro.observe(el);
    return () => {
      ro.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, []);

  return html`
    <section class="card chart" data-chart=${prefix} data-nonzero=${nonZero}>
      <header>
        <h3>${title}</h3>
        <span class="muted">${t('chart.steps', { step: timeline?.step ?? 10 })}</span>
      </header>
      ${!data && html`<${Empty}>${t('chart.empty')}</${Empty}>`}
      <div class="plot" ref=${box}></div>
    </section>
  `;
}

// ---------------------------------------------------------------- overview

function Stat({ label, value, note, name, href }) {
  const body = html`<span class="stat-value" data-stat=${name}>${value}</span><span class="stat-label">${label}</span>${
      note && html`<span class="stat-note">${note}</span>`
    }`;
  return href ? html`<a class="card stat" href=${href}>${body}</a>` : html`<div class="card stat">${body}</div>`;
}

function TopList({ title, rows, what }) {
  return html`
    <section class="card top" data-top=${what}>
      <h3>${title}</h3>
      ${
        !rows?.length
          ? html`<${Empty}>${t('top.nobody')}</${Empty}>`
          : html`<ol>
              ${rows.map(
                (r) =>
                  html`<li key=${r.subject}>
                    <${SubjectLink} subject=${r.subject} /><span class="count">${fmtNum(r.count)}</span>
                  </li>`,
              )}
            </ol>`
      }
    </section>
  `;
}

function Overview({ call, status, statusError, feed }) {
  const [timeline] = usePoll(() => call('/v1/timeline'), [call]);
  const [top] = usePoll(() => call('/v1/top'), [call]);
  const s = status ?? {};
  const store = s.store ?? {};
  const pf = s.postfix ?? {};
  const dc = s.dovecot ?? {};
  return html`
    <div class="overview">
      <${Problem} error=${statusError} what=${t('what.status')} />
      <div class="stats">
        <${Stat} name="activeBans" label=${t('stat.bans')} value=${fmtNum(store.activeBans)} href="#/bans" />
        <${Stat}
          name="activeSuspensions"
          label=${t('stat.suspended')}
          value=${fmtNum(store.activeSuspensions)}
          href="#/users"
        />
        <${Stat}
          name="postfixRequests"
          label=${t('stat.postfix')}
          value=${fmtNum(pf.requests)}
          note=${pf.budgetMisses ? t('stat.overBudget', { n: fmtNum(pf.budgetMisses) }) : ''}
        />
        <${Stat}
          name="dovecotRequests"
          label=${t('stat.dovecot')}
          value=${fmtNum(dc.requests)}
          note=${dc.refused !== undefined ? t('stat.refusedDelayed', { refused: fmtNum(dc.refused), delayed: fmtNum(dc.delayed) }) : ''}
        />
        <${Stat}
          name="counterKeys"
          label=${t('stat.keys')}
          value=${fmtNum(store.counterKeys)}
          note=${store.backend ? t('stat.backend', { backend: store.backend }) : ''}
        />
        <${Stat}
          name="uptime"
          label=${t('stat.uptime')}
          value=${s.uptimeSeconds !== undefined ? fmtSpan(s.uptimeSeconds) : '—'}
          note=${s.version ? `v${s.version}` : ''}
        />
      </div>
      <${Problem} error=${timeline.error} what=${t('what.timeline')} />
      <div class="charts">
        <${Chart} title=${t('chart.decisions')} timeline=${timeline.data} prefix="decisions" />
        <${Chart} title=${t('chart.failures')} timeline=${timeline.data} prefix="auth_failures" />
        <${Chart} title=${t('chart.flowTitle')} timeline=${timeline.data} prefix="flow_limit_hits" />
      </div>
      <h2>${t('top.title')} <span class="muted">${t('top.note')}</span></h2>
      <${Problem} error=${top.error} what=${t('what.top')} />
      <div class="tops">
        <${TopList} title=${t('top.ips')} rows=${top.data?.ips} what="ips" />
        <${TopList} title=${t('top.networks')} rows=${top.data?.networks} what="networks" />
        <${TopList} title=${t('top.users')} rows=${top.data?.users} what="users" />
      </div>
      <h2>${t('events.latest')} <a class="more" href="#/events">${t('events.all')}</a></h2>
      <${EventTable} events=${feed.events.slice(0, 8)} link=${feed.link} compact />
    </div>
  `;
}

// ---------------------------------------------------------------- bans

const PAGE = 50;

/** Lifts the ban on `subject`, after asking on the spot. */
function UnbanButton({ call, subject, run }) {
  return html`<${Confirm}
    label=${t('bans.unban')}
    question=${t('bans.unbanQuestion', { subject })}
    yes=${t('bans.unbanYes')}
    onYes=${() =>
      run(
        () => call(`/v1/bans/${encodeURIComponent(subject)}`, { method: 'DELETE' }),
        t('bans.unbanned', { subject }),
        (err) => (err.status === 404 ? t('bans.gone', { subject }) : t('action.failed', { error: refusal(err) })),
      )}
  />`;
}

const banMade = (b) => t('bans.made', { subject: b.subject, until: fmtTime(b.until), rel: fmtRelative(b.until) });

function Bans({ call, onChange }) {
  const [input, setInput] = useState('');
  const [q, setQ] = useState('');
  const [offset, setOffset] = useState(0);
  useEffect(() => {
    const timer = setTimeout(() => {
      setQ(input.trim());
      setOffset(0);
    }, 250);
    return () => clearTimeout(timer);
  }, [input]);
  const [bans, reload] = usePoll(
    () => call(`/v1/bans?${new URLSearchParams({ q, limit: String(PAGE), offset: String(offset) })}`),
    [call, q, offset],
  );
  const changed = useCallback(() => {
    reload();
    onChange();
  }, [reload, onChange]);
  const { notice, run, report } = useAction(changed);

  const d = bans.data;
  const columns = [
    { label: t('col.subject'), cell: (b) => html`<${SubjectLink} subject=${b.subject} />` },
    { label: t('col.rule'), cell: (b) => html`<code>${b.rule}</code>` },
    { label: t('col.reason'), cls: 'reason', cell: (b) => readable(b.reason) },
    { label: t('col.offence'), cls: 'num', cell: (b) => b.offence },
    { label: t('col.since'), cell: (b) => html`<${When} ms=${b.since} />` },
    { label: t('col.ends'), cell: (b) => html`<${When} ms=${b.until} />` },
    { label: t('col.by'), cell: (b) => b.actor },
    { label: '', cls: 'actions', cell: (b) => html`<${UnbanButton} call=${call} subject=${b.subject} run=${run} />` },
  ];
  return html`
    <section class="bans">
      <div class="toolbar">
        <h2>
          ${t('bans.title')}
          ${d && html`<span class="muted">${t(q ? 'bans.matching' : 'bans.active', { n: fmtNum(d.total) })}</span>`}
        </h2>
        <input
          class="search"
          type="search"
          placeholder=${t('bans.search')}
          aria-label=${t('bans.searchLabel')}
          value=${input}
          onInput=${(e) => setInput(e.currentTarget.value)}
        />
      </div>
      <${Opener}
        label=${t('bans.add')}
        form=${(close) =>
          html`<${BanForm}
            call=${call}
            onCancel=${close}
            onDone=${(b) => {
              close();
              report(banMade(b));
            }}
          />`}
      />
      <${Notice} notice=${notice} />
      <${Problem} error=${bans.error} what=${t('what.bans')} />
      ${d && d.items.length === 0 && html`<${Empty}>${q ? t('bans.noMatch', { q }) : t('bans.none')}</${Empty}>`}
      ${
        d?.items.length > 0 &&
        html`<${DataTable}
          id="ban-table"
          columns=${columns}
          rows=${d.items}
          rowKey=${(b) => b.subject}
          rowAttrs=${(b) => ({ 'data-subject': b.subject })}
        />`
      }
      ${
        d &&
        d.total > PAGE &&
        html`<div class="pager">
          <button disabled=${offset === 0} onClick=${() => setOffset(Math.max(0, offset - PAGE))}>
            ${t('page.previous')}
          </button>
          <span
            >${t('page.range', { from: offset + 1, to: Math.min(offset + PAGE, d.total), total: fmtNum(d.total) })}</span
          >
          <button disabled=${offset + PAGE >= d.total} onClick=${() => setOffset(offset + PAGE)}>
            ${t('page.next')}
          </button>
        </div>`
      }
    </section>
  `;
}

// ---------------------------------------------------------------- users

/** Resumes `user`, after asking on the spot. */
function ResumeButton({ call, user, run }) {
  return html`<${Confirm}
    cls="primary"
    label=${t('users.resume')}
    question=${t('users.resumeQuestion', { user })}
    yes=${t('users.resumeYes')}
    onYes=${() =>
      run(
        () => call(`/v1/users/${encodeURIComponent(user)}/resume`, { method: 'POST' }),
        t('users.resumed', { user }),
        (err) => (err.status === 404 ? t('users.gone', { user }) : t('action.failed', { error: refusal(err) })),
      )}
  />`;
}

const suspensionMade = (s) => t('users.made', { user: s.user, until: fmtTime(s.until), rel: fmtRelative(s.until) });

function Users({ call, onChange }) {
  const [users, reload] = usePoll(() => call('/v1/users'), [call]);
  const changed = useCallback(() => {
    reload();
    onChange();
  }, [reload, onChange]);
  const { notice, run, report } = useAction(changed);
  const items = users.data?.items;
  const columns = [
    { label: t('col.user'), cell: (u) => html`<${SubjectLink} subject=${u.user} />` },
    { label: t('col.rule'), cell: (u) => html`<code>${u.rule}</code>` },
    { label: t('col.reason'), cls: 'reason', cell: (u) => readable(u.reason) },
    { label: t('col.since'), cell: (u) => html`<${When} ms=${u.since} />` },
    { label: t('col.ends'), cell: (u) => html`<${When} ms=${u.until} />` },
    { label: t('col.by'), cell: (u) => u.actor },
    { label: '', cls: 'actions', cell: (u) => html`<${ResumeButton} call=${call} user=${u.user} run=${run} />` },
  ];
  return html`
    <section class="users">
      <div class="toolbar">
        <h2>${t('users.title')} ${items && html`<span class="muted">${fmtNum(items.length)}</span>`}</h2>
      </div>
      <${Opener}
        label=${t('users.suspend')}
        form=${(close) =>
          html`<${SuspendForm}
            call=${call}
            onCancel=${close}
            onDone=${(s) => {
              close();
              report(suspensionMade(s));
            }}
          />`}
      />
      <${Notice} notice=${notice} />
      <${Problem} error=${users.error} what=${t('what.users')} />
      ${items && items.length === 0 && html`<${Empty}>${t('users.none')}</${Empty}>`}
      ${
        items?.length > 0 &&
        html`<${DataTable}
          id="user-table"
          columns=${columns}
          rows=${items}
          rowKey=${(u) => u.user}
          rowAttrs=${(u) => ({ 'data-user': u.user })}
        />`
      }
    </section>
  `;
}

// ---------------------------------------------------------------- allowlist

function Allowlist({ call }) {
  const [list, reload] = usePoll(() => call('/v1/allowlist'), [call]);
  const { notice, run, report } = useAction(reload);
  const items = list.data?.items;
  const remove = (subject) =>
    run(
      () => call(`/v1/allowlist/${encodeURIComponent(subject)}`, { method: 'DELETE' }),
      t('allow.removed', { subject }),
      (err) => (err.status === 404 ? t('allow.gone', { subject }) : t('action.failed', { error: refusal(err) })),
    );
  const columns = [
    { label: t('col.subject'), cell: (a) => html`<${SubjectLink} subject=${a.subject} />` },
    { label: t('col.kind'), cell: (a) => html`<${Badge} kind=${a.kind} />` },
    { label: t('col.source'), cell: (a) => html`<${Badge} kind=${a.source} />` },
    { label: t('col.reason'), cls: 'reason', cell: (a) => readable(a.reason) },
    { label: t('col.by'), cell: (a) => a.actor ?? '' },
    { label: t('col.since'), cell: (a) => (a.since ? html`<${When} ms=${a.since} />` : '') },
    { label: t('col.ends'), cell: (a) => html`<${When} ms=${a.until} />` },
    {
      label: '',
      cls: 'actions',
      cell: (a) =>
        a.source === 'config'
          ? html`<span class="muted" title=${t('allow.configHint')}>${t('allow.inConfig')}</span>`
          : html`<${Confirm}
              label=${t('allow.remove')}
              question=${t('allow.removeQuestion', { subject: a.subject })}
              yes=${t('allow.removeYes')}
              onYes=${() => remove(a.subject)}
            />`,
    },
  ];
  const fields = [
    {
      name: 'subject',
      label: t('field.allowSubject'),
      placeholder: '192.0.2.10, 198.51.100.0/24, alice@example.org',
      required: true,
    },
    reasonField(),
    durationField(t('field.allowDurationHint')),
  ];
  return html`
    <section class="allowlist">
      <div class="toolbar">
        <h2>${t('allow.title')} ${list.data && html`<span class="muted">${fmtNum(list.data.total)}</span>`}</h2>
      </div>
      <p class="muted">${t('allow.intro')}</p>
      <${Opener}
        label=${t('allow.add')}
        form=${(close) =>
          html`<${EntryForm}
            id="allow-form"
            title=${t('allow.add')}
            fields=${fields}
            submit=${t('allow.submit')}
            send=${(body) => call('/v1/allowlist', post(body))}
            onCancel=${close}
            onDone=${(a) => {
              close();
              const overlap = a.bansOverlapping?.map((b) => b.subject).join(', ');
              report(
                `${t('allow.added', { subject: a.subject })}${overlap ? ` ${t('allow.bansOverlap', { bans: overlap })}` : ''}`,
              );
            }}
          />`}
      />
      <${Notice} notice=${notice} />
      <${Problem} error=${list.error} what=${t('what.allowlist')} />
      ${items && items.length === 0 && html`<${Empty}>${t('allow.none')}</${Empty}>`}
      ${
        items?.length > 0 &&
        html`<${DataTable}
          id="allow-table"
          columns=${columns}
          rows=${items}
          rowKey=${(a) => `${a.source}|${a.subject}`}
          rowAttrs=${(a) => ({ 'data-subject': a.subject, 'data-source': a.source })}
        />`
      }
    </section>
  `;
}

// ---------------------------------------------------------------- explain

/** The state of the subject, line by line, each with what can be done about it. */
function Standing({ x, call, run }) {
  const lines = [];
  if (x.allowlisted)
    lines.push(
      html`<li class="ok" key="allow">
        ${t(`explain.allowlisted.${x.kind === 'user' ? 'user' : 'ip'}`, { subject: x.subject })}
      </li>`,
    );
  for (const b of x.bans) {
    lines.push(
      html`<li class="bad" key=${`ban|${b.subject}`} data-ban=${b.subject}>
        <span
          >${tx('explain.banned', {
            subject: html`<code>${b.subject}</code>`,
            until: html`<${When} ms=${b.until} />`,
            actor: b.actor,
            rule: html`<code>${b.rule}</code>`,
            offence: b.offence,
            reason: readable(b.reason),
          })}</span
        >
        <${UnbanButton} call=${call} subject=${b.subject} run=${run} />
      </li>`,
    );
  }
  const s = x.suspension;
  if (s) {
    lines.push(
      html`<li class="bad" key="suspended" data-suspended=${s.user}>
        <span
          >${tx('explain.suspended', {
            user: html`<code>${s.user}</code>`,
            until: html`<${When} ms=${s.until} />`,
            actor: s.actor,
            rule: html`<code>${s.rule}</code>`,
            reason: readable(s.reason),
          })}</span
        >
        <${ResumeButton} call=${call} user=${s.user} run=${run} />
      </li>`,
    );
  }
  // An allowlisted subject is never acted on, and a rule that only counts has nothing to warn of.
  for (const c of x.allowlisted ? [] : x.counters.filter((c) => c.count >= c.limit && c.acts)) {
    const vars = {
      rule: html`<code>${c.rule}</code>`,
      count: fmtNum(c.count),
      limit: fmtNum(c.limit),
      window: c.window,
      subject: c.subject,
      acts: html`<code>${c.acts}</code>`,
    };
    lines.push(
      html`<li class=${c.mode === 'observe' ? 'ok' : 'warn'} key=${`limit|${c.rule}|${c.subject}`}>
        <span>${tx(c.mode === 'observe' ? 'explain.observed' : 'explain.atLimit', vars)}</span>
      </li>`,
    );
  }
  if (lines.length === 0)
    lines.push(html`<li class="ok" key="clear">${t('explain.clear', { subject: x.subject })}</li>`);
  return html`<ul class="summary">
    ${lines}
  </ul>`;
}

function Explain({ call, subject, onChange }) {
  const [input, setInput] = useState(subject);
  const [res, reload] = usePoll(
    () => (subject ? call(`/v1/explain/${encodeURIComponent(subject)}`) : Promise.resolve(null)),
    [call, subject],
    0,
  );
  const changed = useCallback(() => {
    reload();
    onChange();
  }, [reload, onChange]);
  const { notice, run, report } = useAction(changed);
  const go = (e) => {
    e.preventDefault();
    const s = input.trim();
    if (s) location.hash = `#/explain/${encodeURIComponent(s)}`;
  };
  const x = res.data;
  const counterColumns = [
    { label: t('col.rule'), cell: (c) => html`<code>${c.rule}</code>` },
    { label: t('col.countedAs'), cell: (c) => c.subject },
    {
      label: t('col.count'),
      cell: (c) =>
        html`<span class="meter"
            ><span
              class=${c.count >= c.limit ? 'full' : ''}
              style=${{ width: `${Math.min(100, (100 * c.count) / Math.max(1, c.limit))}%` }}
            ></span></span
          >${fmtNum(c.count)} / ${fmtNum(c.limit)}`,
    },
    { label: t('col.window'), cell: (c) => c.window },
    { label: t('col.mode'), cell: (c) => html`<${Badge} kind=${c.mode} />` },
    { label: t('col.then'), cell: (c) => html`<${Badge} kind=${c.action} />` },
  ];
  const auditColumns = [
    { label: t('col.time'), cell: (a) => html`<${When} ms=${a.time} />` },
    { label: t('col.what'), cell: (a) => html`<${Badge} kind=${a.kind} />` },
    { label: t('col.subject'), cell: (a) => a.subject },
    { label: t('col.rule'), cell: (a) => html`<code>${a.rule}</code>` },
    { label: t('col.reason'), cls: 'reason', cell: (a) => readable(a.reason) },
    { label: t('col.by'), cell: (a) => a.actor },
    { label: t('col.evidence'), cell: (a) => html`<${Evidence} ev=${a.evidence} />` },
  ];
  // a form made it: say so, then the explanation shows it
  const acted = (close, said) => (made) => {
    close();
    report(said(made));
  };
  return html`
    <section class="explain">
      <form class="toolbar" onSubmit=${go}>
        <h2>${t('explain.heading')}</h2>
        <input
          class="search"
          name="subject"
          placeholder=${t('explain.placeholder')}
          aria-label=${t('explain.placeholder')}
          value=${input}
          onInput=${(e) => setInput(e.currentTarget.value)}
        />
        <button type="submit" class="primary">${t('explain.submit')}</button>
      </form>
      ${!subject && html`<${Empty}>${t('explain.intro')}</${Empty}>`}
      <${Problem} error=${res.error} what=${t('what.explanation')} />
      ${
        x &&
        html`<div class="explanation">
          <h3>
            <code>${x.subject}</code> <${Badge} kind=${x.kind} />
            ${x.allowlisted && html`<${Badge} kind="allowlisted" />`}
          </h3>
          <${Notice} notice=${notice} />
          <${Standing} x=${x} call=${call} run=${run} />
          <div class="explain-actions">
            ${
              x.kind === 'user'
                ? !x.suspension &&
                  html`<${Opener}
                    label=${t('users.suspendFor', { user: x.subject })}
                    form=${(close) =>
                      html`<${SuspendForm}
                        call=${call}
                        user=${x.subject}
                        onCancel=${close}
                        onDone=${acted(close, suspensionMade)}
                      />`}
                  />`
                : !x.bans.some((b) => b.subject === x.subject) &&
                  html`<${Opener}
                    label=${t('bans.addFor', { subject: x.subject })}
                    form=${(close) =>
                      html`<${BanForm}
                        call=${call}
                        subject=${x.subject}
                        onCancel=${close}
                        onDone=${acted(close, banMade)}
                      />`}
                  />`
            }
          </div>
          <h4>${t('explain.counters')}</h4>
          ${
            x.counters.length === 0
              ? html`<${Empty}>${t('explain.noCounters')}</${Empty}>`
              : html`<${DataTable}
                  cls="counters"
                  columns=${counterColumns}
                  rows=${x.counters}
                  rowKey=${(c) => `${c.rule}|${c.subject}`}
                />`
          }
          <h4>${t('explain.audit')} <span class="muted">${t('explain.newestFirst')}</span></h4>
          ${
            x.audit.length === 0
              ? html`<${Empty}>${t('explain.noAudit')}</${Empty}>`
              : html`<${DataTable} cls="audit" columns=${auditColumns} rows=${x.audit} rowKey=${(a) => a.id} />`
          }
        </div>`
      }
    </section>
  `;
}

// ---------------------------------------------------------------- events

function EventTable({ events, link, compact }) {
  if (events.length === 0) {
    return html`<${Empty}>${link === 'unavailable' ? t('events.unavailable') : t('events.none')}</${Empty}>`;
  }
  const columns = [
    { label: t('col.time'), cell: (e) => html`<span title=${fmtTime(e.time)}>${fmtClock(e.time)}</span>` },
    {
      label: t('col.event'),
      // Dovecot asks about a login attempt: named so, not as a bare decision
      cell: (e) =>
        e.kind === 'decision' && e.adapter === 'dovecot'
          ? html`<${Badge} kind="decision">${t('event.login')}</${Badge}>`
          : html`<${Badge} kind=${e.kind} />`,
    },
    { label: t('col.via'), cell: (e) => [e.adapter, e.protocol].filter(Boolean).join(' · ') },
    {
      label: t('col.action'),
      // a row of refusals of one source by one rule stands for `count` of them (admin/activity.ts)
      cell: (e) => {
        if (!e.action) return '';
        const times = e.count > 1 ? html` <span class="muted">×${fmtNum(e.count)}</span>` : '';
        return html`<${Badge} kind=${e.action} />${times}`;
      },
    },
    { label: t('col.rule'), cell: (e) => (e.rule ? html`<code>${e.rule}</code>` : '') },
    {
      label: t('col.subject'),
      cell: (e) => {
        const also = e.subject === undefined && e.ip && e.user ? e.user : null;
        return html`<${SubjectLink}
            subject=${e.subject ?? e.ip ?? e.user}
          />${also && html` · <${SubjectLink} subject=${also} />`}`;
      },
    },
    { label: t('col.reason'), cls: 'reason', cell: (e) => readable(e.reason) },
  ];
  return html`<${DataTable}
    cls=${`events${compact ? ' compact' : ''}`}
    columns=${columns}
    rows=${events}
    rowKey=${(e) => e._id}
    rowAttrs=${(e) => ({ 'data-kind': e.kind })}
  />`;
}

function Events({ feed }) {
  const [filter, setFilter] = useState('');
  const f = filter.trim().toLowerCase();
  const shown = f
    ? feed.events.filter((e) =>
        [e.kind, e.adapter, e.protocol, e.action, e.rule, e.ip, e.user, e.subject, e.reason].some(
          (v) => v && String(v).toLowerCase().includes(f),
        ),
      )
    : feed.events;
  return html`
    <section class="events-page">
      <div class="toolbar">
        <h2>${t('events.title')} <span class=${`link link-${feed.link}`}>${t(`link.${feed.link}`)}</span></h2>
        <input
          class="search"
          type="search"
          placeholder=${t('events.filter')}
          aria-label=${t('events.filterLabel')}
          value=${filter}
          onInput=${(e) => setFilter(e.currentTarget.value)}
        />
        <button onClick=${() => feed.setPause(!feed.paused)}>
          ${feed.paused ? t('events.resume') : t('events.pause')}
        </button>
        <button onClick=${feed.clear}>${t('events.clear')}</button>
      </div>
      <p class="muted">${t('events.note', { max: FEED_MAX })} ${feed.paused ? t('events.pausedNote') : ''}</p>
      <${EventTable} events=${shown} link=${feed.link} />
    </section>
  `;
}

// ---------------------------------------------------------------- the app

const TABS = ['overview', 'bans', 'users', 'allowlist', 'explain', 'events'];

function Shell({ token, signOut, onLocale }) {
  const [name, arg] = useRoute();
  const call = useCallback((path, init) => api(token, path, init), [token]);
  const [status, reloadStatus] = usePoll(() => call('/v1/status'), [call]);
  const feed = useEventFeed(token);
  // a ban, unban, suspension or resume changes the counts in the header: fetch them now, not at the next tick
  const lastChange = feed.events.find((e) => e.kind !== 'decision')?._id;
  useEffect(() => {
    if (lastChange) reloadStatus();
  }, [lastChange]);
  const s = status.data;
  useEffect(() => {
    if (s) onLocale(s.locale);
  }, [s?.locale]);
  const counts = { bans: s?.store?.activeBans, users: s?.store?.activeSuspensions };
  const current = TABS.includes(name) ? name : 'overview';
  let page;
  switch (current) {
    case 'bans':
      page = html`<${Bans} call=${call} onChange=${reloadStatus} />`;
      break;
    case 'users':
      page = html`<${Users} call=${call} onChange=${reloadStatus} />`;
      break;
    case 'allowlist':
      page = html`<${Allowlist} call=${call} />`;
      break;
    case 'explain':
      // one per subject: what was said and typed about another does not stay
      page = html`<${Explain} key=${arg} call=${call} subject=${arg} onChange=${reloadStatus} />`;
      break;
    case 'events':
      page = html`<${Events} feed=${feed} />`;
      break;
    default:
      page = html`<${Overview} call=${call} status=${s} statusError=${status.error} feed=${feed} />`;
  }
  return html`
    <header class="top-bar">
      <a class="brand" href="#/overview"><span class="logo">◆</span> mailwarden</a>
      <nav>
        ${TABS.map(
          (id) =>
            html`<a key=${id} href=${`#/${id}`} class=${current === id ? 'active' : ''} data-tab=${id}>
              ${t(`tab.${id}`)}${counts[id] ? html` <span class="pill">${counts[id]}</span>` : ''}${
                id === 'events'
                  ? html` <span class=${`dot link-${feed.link}`} title=${t(`link.${feed.link}`)}></span>`
                  : ''
              }
            </a>`,
        )}
      </nav>
      <span class="node">${s ? `${s.node ?? ''} · v${s.version ?? '?'}` : ''}</span>
      <button class="ghost" onClick=${() => signOut('')}>${t('signout')}</button>
    </header>
    ${Degraded(s)}
    <main class="page">${page}</main>
  `;
}

/** States where mailwarden works but not fully: said on every page, never only in a log. */
/** Banners for what needs the administrator now: the disk, the firewall, our own addresses on a blocklist. */
function Degraded(s) {
  const out = [];
  const p = s?.store?.persistence;
  if (p && !p.ok)
    out.push(html`<p class="problem degraded" role="alert" data-degraded="persistence">
      <strong>${t('degraded.title')}</strong> ${p.error ?? t('degraded.error')}
      ${p.queued ? ` · ${t('degraded.queued', { n: fmtNum(p.queued) })}` : ''} · ${t('degraded.note')}
    </p>`);
  const f = s?.firewall;
  if (f?.state === 'degraded')
    out.push(html`<p class="problem degraded" role="alert" data-degraded="firewall">
      <strong>${t('firewall.title')}</strong> ${f.lastError ?? ''} · ${t('firewall.note')}
    </p>`);
  for (const c of (s?.reputation?.checks ?? []).filter((x) => x.state === 'listed'))
    out.push(html`<p class="problem degraded" role="alert" data-degraded="reputation">
      <strong>${t('reputation.title')}</strong>
      ${t('reputation.listed', { subject: c.subject, zone: c.zone, codes: (c.codes ?? []).join(', ') })}
      ${c.reason ? ` · ${c.reason}` : ''}
    </p>`);
  return out;
}

function App() {
  const [token, setToken] = useState(() => sessionStorage.getItem(TOKEN_KEY));
  const [message, setMessage] = useState('');
  const [lang, setLang] = useState(() => localStorage.getItem(LOCALE_KEY) ?? 'en');
  const onLocale = useCallback((daemons = 'en') => {
    localStorage.setItem(LOCALE_KEY, daemons);
    setLang(daemons);
  }, []);
  // before anything below renders: they all read the words of this language
  setLocale(lang);
  const signOut = useCallback((why) => {
    sessionStorage.removeItem(TOKEN_KEY);
    setToken(null);
    setMessage(why);
  }, []);
  onUnauthorized = () => signOut(t('signin.stale'));
  if (!token) {
    return html`<${SignIn}
      message=${message}
      onToken=${(tok) => {
        sessionStorage.setItem(TOKEN_KEY, tok);
        setMessage('');
        setToken(tok);
      }}
    />`;
  }
  return html`<${Shell} token=${token} signOut=${signOut} onLocale=${onLocale} />`;
}

const root = document.getElementById('app');
root.textContent = ''; // the "Loading…" line: render() does not replace what is there
render(html`<${App} />`, root);
