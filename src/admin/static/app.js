// The mailwarden dashboard: preact + htm, plain ES modules, no build step.
// Every API call carries the admin token (kept in sessionStorage); a 401
// anywhere signs out and says why.
import { h, render } from 'preact';
import { useCallback, useEffect, useMemo, useRef, useState } from 'preact/hooks';
import htm from 'htm';
import uPlot from 'uplot';

const html = htm.bind(h);

const TOKEN_KEY = 'mailwarden.token';
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
      onEvent(JSON.parse(data.join('\n')));
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

const pad = (n) => String(n).padStart(2, '0');

function fmtTime(ms) {
  if (!Number.isFinite(ms)) return '—';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtClock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtSpan(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${pad(s % 60)}s`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs}h ${pad(m % 60)}m`;
  return `${Math.floor(hrs / 24)}d ${hrs % 24}h`;
}

function fmtRelative(ms) {
  if (!Number.isFinite(ms)) return '';
  const diff = (ms - Date.now()) / 1000;
  return diff >= 0 ? `in ${fmtSpan(diff)}` : `${fmtSpan(-diff)} ago`;
}

const fmtNum = (n) => (typeof n === 'number' ? n.toLocaleString('en') : '—');

/** Audit evidence as `key=value` pairs; nested values stay JSON. */
function fmtEvidence(ev) {
  if (!ev || typeof ev !== 'object') return '';
  return Object.entries(ev)
    .map(([k, v]) => `${k}=${typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}`)
    .join(' ');
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
            (ev) => {
              if (paused.current) return;
              const row = { ...ev, _id: ++n, time: typeof ev.time === 'number' ? ev.time : Date.now() };
              setEvents((old) => [row, ...old].slice(0, FEED_MAX));
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

// ---------------------------------------------------------------- small parts

function Problem({ error, what }) {
  if (!error) return null;
  const text = error instanceof ApiError ? `${error.status}: ${error.message}` : error.message || String(error);
  return html`<p class="problem" role="alert">Could not load ${what}: ${text}</p>`;
}

function Empty({ children }) {
  return html`<p class="empty">${children}</p>`;
}

function SubjectLink({ subject }) {
  if (!subject) return html`<span class="muted">—</span>`;
  return html`<a class="subject" href=${explainHref(subject)} title="Explain ${subject}">${subject}</a>`;
}

function Until({ ms }) {
  return html`<span title=${fmtTime(ms)}>${fmtRelative(ms)}</span>`;
}

function Badge({ kind, children }) {
  return html`<span class=${`badge badge-${kind}`}>${children ?? kind}</span>`;
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
      setError('Paste the admin token first.');
      return;
    }
    setBusy(true);
    setError('');
    try {
      const res = await fetch('/v1/status', { cache: 'no-store', headers: { authorization: `Bearer ${token}` } });
      if (res.status === 401)
        setError('That token was not accepted (401 Unauthorized). Copy it again from <data dir>/admin.token.');
      else if (!res.ok) setError(`The daemon answered ${res.status} ${res.statusText}.`);
      else onToken(token);
    } catch (err) {
      setError(`Could not reach the daemon: ${err.message}`);
    } finally {
      setBusy(false);
    }
  };
  const shown = error || message;
  return html`
    <main class="signin">
      <form class="card signin-card" onSubmit=${submit}>
        <h1><span class="logo">◆</span> mailwarden</h1>
        <p class="muted">
          Sign in with the admin token from <code>${'<data dir>/admin.token'}</code> on the mail server.
        </p>
        ${shown && html`<p class="problem" role="alert" id="signin-error">${shown}</p>`}
        <label for="token">Admin token</label>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="current-password"
          autofocus
          value=${value}
          onInput=${(e) => setValue(e.currentTarget.value)}
        />
        <button type="submit" class="primary" disabled=${busy}>${busy ? 'Checking…' : 'Sign in'}</button>
        <p class="fine">The token stays in this browser tab only (session storage) and is sent to this daemon alone.</p>
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
  const key = names.join(',');

  useEffect(() => {
    if (!data || !box.current) return;
    if (plot.current && plot.current._key === key) {
      plot.current.setData(data);
      return;
    }
    plot.current?.destroy();
    const label = (n) => (n.includes('.') ? n.slice(n.indexOf('.') + 1) : n.replaceAll('_', ' '));
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
        { label: 'Time', value: (_u, v) => (v == null ? 'last hour' : fmtClock(v * 1000)) },
        ...names.map((n, i) => {
          const color = COLORS[n] ?? SPARE[i % SPARE.length];
          return {
            label: label(n),
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
        <span class="muted">last hour · ${timeline ? `${timeline.step} s steps` : ''}</span>
      </header>
      ${!data && html`<${Empty}>No data for this chart yet.</${Empty}>`}
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
          ? html`<${Empty}>Nobody in the last hour.</${Empty}>`
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
      <${Problem} error=${statusError} what="the status" />
      <div class="stats">
        <${Stat} name="activeBans" label="Active bans" value=${fmtNum(store.activeBans)} href="#/bans" />
        <${Stat}
          name="activeSuspensions"
          label="Suspended users"
          value=${fmtNum(store.activeSuspensions)}
          href="#/users"
        />
        <${Stat}
          name="postfixRequests"
          label="Postfix requests"
          value=${fmtNum(pf.requests)}
          note=${pf.budgetMisses ? `${fmtNum(pf.budgetMisses)} over budget` : ''}
        />
        <${Stat}
          name="dovecotRequests"
          label="Dovecot auth checks"
          value=${fmtNum(dc.requests)}
          note=${dc.refused !== undefined ? `${fmtNum(dc.refused)} refused · ${fmtNum(dc.delayed)} delayed` : ''}
        />
        <${Stat}
          name="counterKeys"
          label="Counter keys"
          value=${fmtNum(store.counterKeys)}
          note=${store.backend ? `${store.backend} store` : ''}
        />
        <${Stat}
          name="uptime"
          label="Uptime"
          value=${s.uptimeSeconds !== undefined ? fmtSpan(s.uptimeSeconds) : '—'}
          note=${s.version ? `v${s.version}` : ''}
        />
      </div>
      <${Problem} error=${timeline.error} what="the timeline" />
      <div class="charts">
        <${Chart} title="Decisions per 10 s" timeline=${timeline.data} prefix="decisions" />
        <${Chart} title="Failed logins per 10 s" timeline=${timeline.data} prefix="auth_failures" />
        <${Chart} title="Flow-limit hits per 10 s" timeline=${timeline.data} prefix="flow_limit_hits" />
      </div>
      <h2>Top offenders <span class="muted">last hour, refusals and failed logins</span></h2>
      <${Problem} error=${top.error} what="the top offenders" />
      <div class="tops">
        <${TopList} title="IP addresses" rows=${top.data?.ips} what="ips" />
        <${TopList} title="Networks" rows=${top.data?.networks} what="networks" />
        <${TopList} title="Users" rows=${top.data?.users} what="users" />
      </div>
      <h2>Latest events <a class="more" href="#/events">all events →</a></h2>
      <${EventTable} events=${feed.events.slice(0, 8)} link=${feed.link} compact />
    </div>
  `;
}

// ---------------------------------------------------------------- bans

const PAGE = 50;

function Bans({ call, onChange }) {
  const [input, setInput] = useState('');
  const [q, setQ] = useState('');
  const [offset, setOffset] = useState(0);
  const [notice, setNotice] = useState(null);
  useEffect(() => {
    const t = setTimeout(() => {
      setQ(input.trim());
      setOffset(0);
    }, 250);
    return () => clearTimeout(t);
  }, [input]);
  const [bans, reload] = usePoll(
    () => call(`/v1/bans?${new URLSearchParams({ q, limit: String(PAGE), offset: String(offset) })}`),
    [call, q, offset],
  );

  const unban = async (subject) => {
    if (
      !confirm(
        `Unban ${subject}?\n\nIt can connect and log in again at once. The offence history stays, so a new ban escalates.`,
      )
    )
      return;
    try {
      await call(`/v1/bans/${encodeURIComponent(subject)}`, { method: 'DELETE' });
      setNotice({ ok: true, text: `${subject} is unbanned.` });
    } catch (err) {
      if (err instanceof Unauthorized) return;
      setNotice({
        ok: false,
        text: err.status === 404 ? `${subject} was no longer banned.` : `Unban failed: ${err.message}`,
      });
    }
    reload();
    onChange();
  };

  const d = bans.data;
  return html`
    <section class="bans">
      <div class="toolbar">
        <h2>Bans ${d && html`<span class="muted">${fmtNum(d.total)}${q ? ' matching' : ' active'}</span>`}</h2>
        <input
          class="search"
          type="search"
          placeholder="Search address, network, rule or reason"
          aria-label="Search bans"
          value=${input}
          onInput=${(e) => setInput(e.currentTarget.value)}
        />
      </div>
      ${notice && html`<p class=${notice.ok ? 'notice' : 'problem'} role="status">${notice.text}</p>`}
      <${Problem} error=${bans.error} what="the bans" />
      ${d && d.items.length === 0 && html`<${Empty}>${q ? `No ban matches “${q}”.` : 'No active bans.'}</${Empty}>`}
      ${
        d?.items.length > 0 &&
        html`<table class="grid" id="ban-table">
          <thead>
            <tr>
              <th>Subject</th>
              <th>Rule</th>
              <th>Reason</th>
              <th>Offence</th>
              <th>Since</th>
              <th>Ends</th>
              <th>By</th>
              <th></th>
            </tr>
          </thead>
          <tbody>
            ${d.items.map(
              (b) =>
                html`<tr key=${b.subject} data-subject=${b.subject}>
                  <td><${SubjectLink} subject=${b.subject} /></td>
                  <td><code>${b.rule}</code></td>
                  <td class="reason">${b.reason}</td>
                  <td class="num">${b.offence}</td>
                  <td title=${fmtTime(b.since)}>${fmtRelative(b.since)}</td>
                  <td><${Until} ms=${b.until} /></td>
                  <td>${b.actor}</td>
                  <td class="actions"><button class="danger" onClick=${() => unban(b.subject)}>Unban</button></td>
                </tr>`,
            )}
          </tbody>
        </table>`
      }
      ${
        d &&
        d.total > PAGE &&
        html`<div class="pager">
          <button disabled=${offset === 0} onClick=${() => setOffset(Math.max(0, offset - PAGE))}>← Previous</button>
          <span>${offset + 1}–${Math.min(offset + PAGE, d.total)} of ${fmtNum(d.total)}</span>
          <button disabled=${offset + PAGE >= d.total} onClick=${() => setOffset(offset + PAGE)}>Next →</button>
        </div>`
      }
    </section>
  `;
}

// ---------------------------------------------------------------- users

function Users({ call, onChange }) {
  const [users, reload] = usePoll(() => call('/v1/users'), [call]);
  const [notice, setNotice] = useState(null);
  const resume = async (user) => {
    if (!confirm(`Resume ${user}?\n\nThe account can send mail again at once.`)) return;
    try {
      await call(`/v1/users/${encodeURIComponent(user)}/resume`, { method: 'POST' });
      setNotice({ ok: true, text: `${user} can send again.` });
    } catch (err) {
      if (err instanceof Unauthorized) return;
      setNotice({
        ok: false,
        text: err.status === 404 ? `${user} was no longer suspended.` : `Resume failed: ${err.message}`,
      });
    }
    reload();
    onChange();
  };
  const items = users.data?.items;
  return html`
    <section class="users">
      <div class="toolbar">
        <h2>Suspended users ${items && html`<span class="muted">${fmtNum(items.length)}</span>`}</h2>
      </div>
      ${notice && html`<p class=${notice.ok ? 'notice' : 'problem'} role="status">${notice.text}</p>`}
      <${Problem} error=${users.error} what="the suspended users" />
      ${items && items.length === 0 && html`<${Empty}>No user is suspended.</${Empty}>`}
      ${
        items?.length > 0 &&
        html`<table class="grid" id="user-table">
          <thead>
            <tr>
              <th>User</th>
              <th>Rule</th>
              <th>Reason</th>
              <th>Since</th>
              <th>Ends</th>
              <th>By</th>
              <th></th>
            </tr>
          </thead>
          <tbody>
            ${items.map(
              (u) =>
                html`<tr key=${u.user} data-user=${u.user}>
                  <td><${SubjectLink} subject=${u.user} /></td>
                  <td><code>${u.rule}</code></td>
                  <td class="reason">${u.reason}</td>
                  <td title=${fmtTime(u.since)}>${fmtRelative(u.since)}</td>
                  <td><${Until} ms=${u.until} /></td>
                  <td>${u.actor}</td>
                  <td class="actions"><button class="primary" onClick=${() => resume(u.user)}>Resume</button></td>
                </tr>`,
            )}
          </tbody>
        </table>`
      }
    </section>
  `;
}

// ---------------------------------------------------------------- explain

function Explain({ call, subject }) {
  const [input, setInput] = useState(subject);
  useEffect(() => setInput(subject), [subject]);
  const [res] = usePoll(
    () => (subject ? call(`/v1/explain/${encodeURIComponent(subject)}`) : Promise.resolve(null)),
    [call, subject],
    0,
  );
  const go = (e) => {
    e.preventDefault();
    const s = input.trim();
    if (s) location.hash = `#/explain/${encodeURIComponent(s)}`;
  };
  const x = res.data;
  return html`
    <section class="explain">
      <form class="toolbar" onSubmit=${go}>
        <h2>Explain</h2>
        <input
          class="search"
          name="subject"
          placeholder="IP address, network (CIDR) or user"
          aria-label="IP address, network or user"
          value=${input}
          onInput=${(e) => setInput(e.currentTarget.value)}
        />
        <button type="submit" class="primary">Explain</button>
      </form>
      ${!subject && html`<${Empty}>Why is an address refused or a user suspended? Enter it above: you get its bans, its counters against every rule, and its audit trail.</${Empty}>`}
      <${Problem} error=${res.error} what="the explanation" />
      ${
        x &&
        html`<div class="explanation">
          <h3>
            <code>${x.subject}</code> <${Badge} kind=${x.kind} />
            ${x.allowlisted && html`<${Badge} kind="allow">allowlisted</${Badge}>`}
          </h3>
          <ul class="summary">
            ${x.summary.map((line, i) => {
              const cls = /^BANNED|^SUSPENDED/.test(line) ? 'bad' : /^AT LIMIT/.test(line) ? 'warn' : 'ok';
              return html`<li key=${i} class=${cls}>${line}</li>`;
            })}
          </ul>
          <h4>Counters</h4>
          ${
            x.counters.length === 0
              ? html`<${Empty}>No rule counts this ${x.kind}.</${Empty}>`
              : html`<table class="grid counters">
                  <thead>
                    <tr>
                      <th>Rule</th>
                      <th>Counted as</th>
                      <th>Count / limit</th>
                      <th>Window</th>
                      <th>Mode</th>
                      <th>Then</th>
                    </tr>
                  </thead>
                  <tbody>
                    ${x.counters.map(
                      (c) =>
                        html`<tr key=${`${c.rule}|${c.subject}`}>
                          <td><code>${c.rule}</code></td>
                          <td>${c.subject}</td>
                          <td>
                            <span class="meter"
                              ><span
                                class=${c.count >= c.limit ? 'full' : ''}
                                style=${{ width: `${Math.min(100, (100 * c.count) / Math.max(1, c.limit))}%` }}
                              ></span
                            ></span>
                            ${fmtNum(c.count)} / ${fmtNum(c.limit)}
                          </td>
                          <td>${c.window}</td>
                          <td>${c.mode}</td>
                          <td>${c.action}</td>
                        </tr>`,
                    )}
                  </tbody>
                </table>`
          }
          <h4>Audit trail <span class="muted">newest first</span></h4>
          ${
            x.audit.length === 0
              ? html`<${Empty}>Nothing recorded.</${Empty}>`
              : html`<table class="grid audit">
                  <thead>
                    <tr>
                      <th>Time</th>
                      <th>What</th>
                      <th>Subject</th>
                      <th>Rule</th>
                      <th>Reason</th>
                      <th>By</th>
                      <th>Evidence</th>
                    </tr>
                  </thead>
                  <tbody>
                    ${x.audit.map(
                      (a) =>
                        html`<tr key=${a.id}>
                          <td title=${fmtRelative(a.time)}>${fmtTime(a.time)}</td>
                          <td><${Badge} kind=${a.kind} /></td>
                          <td>${a.subject}</td>
                          <td><code>${a.rule}</code></td>
                          <td class="reason">${a.reason}</td>
                          <td>${a.actor}</td>
                          <td><code class="evidence">${fmtEvidence(a.evidence)}</code></td>
                        </tr>`,
                    )}
                  </tbody>
                </table>`
          }
        </div>`
      }
    </section>
  `;
}

// ---------------------------------------------------------------- events

const LINK_TEXT = { connecting: 'connecting…', live: 'live', down: 'reconnecting…', unavailable: 'not available' };

function EventTable({ events, link, compact }) {
  if (events.length === 0) {
    return html`<${Empty}>${link === 'unavailable' ? 'This daemon does not offer a live event stream.' : 'No events since this page was opened.'}</${Empty}>`;
  }
  return html`<table class=${`grid events${compact ? ' compact' : ''}`}>
    <thead>
      <tr>
        <th>Time</th>
        <th>Event</th>
        <th>Via</th>
        <th>Action</th>
        <th>Rule</th>
        <th>Subject</th>
        <th>Reason</th>
      </tr>
    </thead>
    <tbody>
      ${events.map((e) => {
        const subject = e.subject ?? e.ip ?? e.user;
        const also = e.subject === undefined && e.ip && e.user ? e.user : null;
        return html`<tr key=${e._id} data-kind=${e.kind}>
          <td>${fmtClock(e.time)}</td>
          <td><${Badge} kind=${e.kind} /></td>
          <td>${e.adapter ?? ''}</td>
          <td>${e.action ? html`<${Badge} kind=${e.action} />` : ''}</td>
          <td>${e.rule ? html`<code>${e.rule}</code>` : ''}</td>
          <td><${SubjectLink} subject=${subject} />${also && html` · <${SubjectLink} subject=${also} />`}</td>
          <td class="reason">${e.reason ?? ''}</td>
        </tr>`;
      })}
    </tbody>
  </table>`;
}

function Events({ feed }) {
  const [filter, setFilter] = useState('');
  const f = filter.trim().toLowerCase();
  const shown = f
    ? feed.events.filter((e) =>
        [e.kind, e.adapter, e.action, e.rule, e.ip, e.user, e.subject, e.reason].some(
          (v) => v && String(v).toLowerCase().includes(f),
        ),
      )
    : feed.events;
  return html`
    <section class="events-page">
      <div class="toolbar">
        <h2>Live events <span class=${`link link-${feed.link}`}>${LINK_TEXT[feed.link]}</span></h2>
        <input
          class="search"
          type="search"
          placeholder="Filter"
          aria-label="Filter events"
          value=${filter}
          onInput=${(e) => setFilter(e.currentTarget.value)}
        />
        <button onClick=${() => feed.setPause(!feed.paused)}>${feed.paused ? 'Resume feed' : 'Pause'}</button>
        <button onClick=${feed.clear}>Clear</button>
      </div>
      <p class="muted">
        Newest first, the last ${FEED_MAX} kept. ${feed.paused ? 'Paused: new events are dropped.' : ''}
      </p>
      <${EventTable} events=${shown} link=${feed.link} />
    </section>
  `;
}

// ---------------------------------------------------------------- the app

const TABS = [
  ['overview', 'Overview'],
  ['bans', 'Bans'],
  ['users', 'Users'],
  ['explain', 'Explain'],
  ['events', 'Events'],
];

function Shell({ token, signOut }) {
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
  const counts = { bans: s?.store?.activeBans, users: s?.store?.activeSuspensions };
  let page;
  switch (name) {
    case 'bans':
      page = html`<${Bans} call=${call} onChange=${reloadStatus} />`;
      break;
    case 'users':
      page = html`<${Users} call=${call} onChange=${reloadStatus} />`;
      break;
    case 'explain':
      page = html`<${Explain} call=${call} subject=${arg} />`;
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
          ([id, label]) =>
            html`<a
              key=${id}
              href=${`#/${id}`}
              class=${name === id || (id === 'overview' && !TABS.some(([t]) => t === name)) ? 'active' : ''}
            >
              ${label}${counts[id] ? html` <span class="pill">${counts[id]}</span>` : ''}${id === 'events' ? html` <span class=${`dot link-${feed.link}`} title=${LINK_TEXT[feed.link]}></span>` : ''}
            </a>`,
        )}
      </nav>
      <span class="node">${s ? `${s.node ?? ''} · v${s.version ?? '?'}` : ''}</span>
      <button class="ghost" onClick=${() => signOut('')}>Sign out</button>
    </header>
    ${Degraded(s)}
    <main class="page">${page}</main>
  `;
}

/** States where mailwarden works but not fully: said on every page, never only in a log. */
function Degraded(s) {
  const p = s?.store?.persistence;
  if (!p || p.ok) return '';
  return html`<p class="problem degraded" role="alert" data-degraded="persistence">
    <strong>Degraded: persistence.</strong> ${p.error ?? 'writes to the data directory fail'}
    ${p.queued ? ` · ${fmtNum(p.queued)} writes waiting` : ''} · bans are enforced from memory and written when the
    disk takes them again.
  </p>`;
}

function App() {
  const [token, setToken] = useState(() => sessionStorage.getItem(TOKEN_KEY));
  const [message, setMessage] = useState('');
  const signOut = useCallback((why) => {
    sessionStorage.removeItem(TOKEN_KEY);
    setToken(null);
    setMessage(why);
  }, []);
  onUnauthorized = () =>
    signOut('The daemon refused the saved token (401 Unauthorized): it may have been replaced. Sign in again.');
  if (!token) {
    return html`<${SignIn}
      message=${message}
      onToken=${(t) => {
        sessionStorage.setItem(TOKEN_KEY, t);
        setMessage('');
        setToken(t);
      }}
    />`;
  }
  return html`<${Shell} token=${token} signOut=${signOut} />`;
}

const root = document.getElementById('app');
root.textContent = ''; // the "Loading…" line: render() does not replace what is there
render(html`<${App} />`, root);
