// Every word the dashboard shows, in English and Japanese (the same keys in
// both: test/admin/dashboard-i18n.test.ts checks it), and the formats of
// dates, spans and numbers that differ by language. No DOM here, so node can
// import it too.

export const STRINGS = {
  en: {
    'tab.overview': 'Overview',
    'tab.bans': 'Bans',
    'tab.users': 'Users',
    'tab.allowlist': 'Allowlist',
    'tab.explain': 'Explain',
    'tab.events': 'Events',
    signout: 'Sign out',

    'signin.intro': 'Sign in with the admin token from {file} on the mail server.',
    'signin.token': 'Admin token',
    'signin.submit': 'Sign in',
    'signin.checking': 'Checking…',
    'signin.fine': 'The token stays in this browser tab only (session storage) and is sent to this daemon alone.',
    'signin.empty': 'Paste the admin token first.',
    'signin.refused': 'That token was not accepted (401 Unauthorized). Copy it again from <data dir>/admin.token.',
    'signin.stale': 'The daemon refused the saved token (401 Unauthorized): it may have been replaced. Sign in again.',
    'signin.status': 'The daemon answered {status}.',
    'signin.unreachable': 'Could not reach the daemon: {error}',

    'problem.load': 'Could not load {what}: {error}',
    'what.status': 'the status',
    'what.timeline': 'the timeline',
    'what.top': 'the top offenders',
    'what.bans': 'the bans',
    'what.users': 'the suspended users',
    'what.allowlist': 'the allowlist',
    'what.explanation': 'the explanation',

    'action.cancel': 'Cancel',
    'action.failed': 'Failed: {error}',
    'form.refused': 'Refused: {error}',
    'form.force': 'Force: do it anyway',
    'field.subject': 'IP address or network (CIDR)',
    'field.user': 'User',
    'field.allowSubject': 'IP address, network (CIDR) or user',
    'field.duration': 'Duration',
    'field.reason': 'Reason',
    'field.reasonPlaceholder': 'optional, kept in the audit trail',
    'field.banDurationHint': "e.g. 30m, 2h, 7d; empty: the policy's length, longer for a repeat offender",
    'field.suspendDurationHint': "e.g. 30m, 2h, 7d; empty: the policy's length",
    'field.allowDurationHint': 'e.g. 7d; empty: until removed',

    'col.subject': 'Subject',
    'col.user': 'User',
    'col.rule': 'Rule',
    'col.reason': 'Reason',
    'col.offence': 'Offence',
    'col.since': 'Since',
    'col.ends': 'Ends',
    'col.by': 'By',
    'col.kind': 'Kind',
    'col.source': 'Source',
    'col.countedAs': 'Counted as',
    'col.count': 'Count / limit',
    'col.window': 'Window',
    'col.mode': 'Mode',
    'col.then': 'Then',
    'col.time': 'Time',
    'col.what': 'What',
    'col.evidence': 'Evidence',
    'col.event': 'Event',
    'col.via': 'Via',
    'col.action': 'Action',

    'badge.decision': 'decision',
    'event.login': 'login attempt',
    'badge.ban': 'ban',
    'badge.unban': 'unban',
    'badge.suspend': 'suspend',
    'badge.resume': 'resume',
    'badge.limit': 'limit',
    'badge.observe': 'observe',
    'badge.enforce': 'enforce',
    'badge.allow': 'allow',
    'badge.delay': 'delay',
    'badge.tempfail': 'tempfail',
    'badge.reject': 'reject',
    'badge.hold': 'hold',
    'badge.ip': 'ip',
    'badge.network': 'network',
    'badge.user': 'user',
    'badge.config': 'config',
    'badge.runtime': 'runtime',
    'badge.allowlisted': 'allowlisted',

    'stat.bans': 'Active bans',
    'stat.suspended': 'Suspended users',
    'stat.postfix': 'Postfix requests',
    'stat.dovecot': 'Dovecot auth checks',
    'stat.keys': 'Counter keys',
    'stat.uptime': 'Uptime',
    'stat.overBudget': '{n} over budget',
    'stat.refusedDelayed': '{refused} refused · {delayed} delayed',
    'stat.backend': '{backend} store',

    'chart.decisions': 'Decisions per 10 s',
    'chart.failures': 'Failed logins per 10 s',
    'chart.flowTitle': 'Flow-limit hits per 10 s',
    'chart.flow': 'flow limit hits',
    'chart.other': 'other',
    'chart.time': 'Time',
    'chart.lastHour': 'last hour',
    'chart.steps': 'last hour · {step} s steps',
    'chart.empty': 'No data for this chart yet.',

    'top.title': 'Top offenders',
    'top.note': 'last hour, refusals and failed logins',
    'top.ips': 'IP addresses',
    'top.networks': 'Networks',
    'top.users': 'Users',
    'top.nobody': 'Nobody in the last hour.',

    'events.latest': 'Latest events',
    'events.all': 'all events →',
    'events.title': 'Live events',
    'events.filter': 'Filter',
    'events.filterLabel': 'Filter events',
    'events.pause': 'Pause',
    'events.resume': 'Resume feed',
    'events.clear': 'Clear',
    'events.note': 'Newest first, the last {max} kept; one row per login attempt.',
    'events.pausedNote': 'Paused: new events are dropped.',
    'events.none': 'No events since this page was opened.',
    'events.unavailable': 'This daemon does not offer a live event stream.',
    'link.connecting': 'connecting…',
    'link.live': 'live',
    'link.down': 'reconnecting…',
    'link.unavailable': 'not available',

    'bans.title': 'Bans',
    'bans.active': '{n} active',
    'bans.matching': '{n} matching',
    'bans.search': 'Search address, network, rule or reason',
    'bans.searchLabel': 'Search bans',
    'bans.none': 'No active bans.',
    'bans.noMatch': 'No ban matches “{q}”.',
    'bans.add': 'Add a ban',
    'bans.addFor': 'Ban {subject}',
    'bans.submit': 'Ban',
    'bans.unban': 'Unban',
    'bans.unbanQuestion': 'Unban {subject}? It can connect and log in again at once; its offence history stays.',
    'bans.unbanYes': 'Yes, unban',
    'bans.unbanned': '{subject} is unbanned.',
    'bans.gone': '{subject} was no longer banned.',
    'bans.made': '{subject} is banned until {until} ({rel}).',

    'page.previous': '← Previous',
    'page.next': 'Next →',
    'page.range': '{from}–{to} of {total}',

    'users.title': 'Suspended users',
    'users.none': 'No user is suspended.',
    'users.suspend': 'Suspend a user',
    'users.suspendFor': 'Suspend {user}',
    'users.submit': 'Suspend',
    'users.resume': 'Resume',
    'users.resumeQuestion': 'Resume {user}? The account can log in and send mail again at once.',
    'users.resumeYes': 'Yes, resume',
    'users.resumed': '{user} can send again.',
    'users.gone': '{user} was no longer suspended.',
    'users.made': '{user} is suspended until {until} ({rel}).',

    'allow.title': 'Allowlist',
    'allow.intro':
      'Addresses, networks and users here are counted but never limited or banned. Entries from the config file are changed there; the others here or with `mailwarden allow`.',
    'allow.add': 'Add to the allowlist',
    'allow.submit': 'Add',
    'allow.added': '{subject} is allowlisted.',
    'allow.bansOverlap': 'These bans share addresses with it: they stay, but no longer stop those addresses: {bans}.',
    'allow.remove': 'Remove',
    'allow.removeQuestion': 'Remove {subject} from the allowlist? It can be limited and banned again at once.',
    'allow.removeYes': 'Yes, remove',
    'allow.removed': '{subject} is no longer allowlisted.',
    'allow.gone': '{subject} was not on the allowlist.',
    'allow.none': 'The allowlist is empty.',
    'allow.inConfig': 'in the config file',
    'allow.configHint': 'To change this entry, edit the allowlist in the config file and reload.',

    'explain.heading': 'Explain',
    'explain.placeholder': 'IP address, network (CIDR) or user',
    'explain.submit': 'Explain',
    'explain.title': 'Explain {subject}',
    'explain.intro':
      'Why is an address refused or a user suspended? Enter it above: you get its bans, its counters against every rule, and its audit trail.',
    'explain.allowlisted.ip': '{subject} is allowlisted: counted, never limited or banned.',
    'explain.allowlisted.user':
      '{subject} is allowlisted: counted, never limited (bans on its source address and manual suspensions still apply).',
    'explain.banned': 'Banned: {subject} until {until} by {actor} (rule {rule}, offence {offence}): {reason}',
    'explain.suspended': 'Suspended: {user} until {until} by {actor} (rule {rule}): {reason}',
    'explain.atLimit': 'At limit: {rule} counts {count}/{limit} per {window} for {subject}; it would {acts}',
    'explain.observed': '{rule} counts {count}/{limit} per {window} for {subject} (observe only: would {acts})',
    'explain.clear': '{subject} is not banned, suspended or at any limit that acts.',
    'explain.counters': 'Counters',
    'explain.noCounters': 'No rule counts this subject.',
    'explain.audit': 'Audit trail',
    'explain.newestFirst': 'newest first',
    'explain.noAudit': 'Nothing recorded.',

    'degraded.title': 'Degraded: persistence.',
    'degraded.error': 'writes to the data directory fail',
    'degraded.queued': '{n} writes waiting',
    'degraded.note': 'bans are enforced from memory and written when the disk takes them again.',
    'firewall.title': 'Degraded: firewall.',
    'firewall.note': 'bans are refused inline only, the kernel does not drop them; retrying.',
    'reputation.title': 'Blocklisted:',
    'reputation.listed': '{subject} is listed in {zone} ({codes}).',

    'time.noEnd': 'no end',
    'span.s': '{s}s',
    'span.ms': '{m}m {s}s',
    'span.hm': '{h}h {m}m',
    'span.dh': '{d}d {h}h',
    'rel.future': 'in {span}',
    'rel.past': '{span} ago',
    'date.sep': '-',
  },

  ja: {
    'tab.overview': '概要',
    'tab.bans': 'BAN',
    'tab.users': 'ユーザー',
    'tab.allowlist': '許可リスト',
    'tab.explain': '調査',
    'tab.events': 'イベント',
    signout: 'サインアウト',

    'signin.intro': 'メールサーバーの {file} にある管理トークンでサインインしてください。',
    'signin.token': '管理トークン',
    'signin.submit': 'サインイン',
    'signin.checking': '確認中…',
    'signin.fine':
      'トークンはこのブラウザのタブ内（セッションストレージ）にだけ保存され、このデーモン以外には送信されません。',
    'signin.empty': '管理トークンを貼り付けてください。',
    'signin.refused':
      'このトークンは受け付けられませんでした（401 Unauthorized）。<data dir>/admin.token からもう一度コピーしてください。',
    'signin.stale':
      '保存済みのトークンがデーモンに拒否されました（401 Unauthorized）。トークンが再発行された可能性があります。もう一度サインインしてください。',
    'signin.status': 'デーモンの応答: {status}',
    'signin.unreachable': 'デーモンに接続できません: {error}',

    'problem.load': '{what}を読み込めませんでした: {error}',
    'what.status': 'ステータス',
    'what.timeline': '推移グラフ',
    'what.top': '違反の多い送信元',
    'what.bans': 'BAN一覧',
    'what.users': '一時停止中のユーザー',
    'what.allowlist': '許可リスト',
    'what.explanation': '調査結果',

    'action.cancel': 'キャンセル',
    'action.failed': '失敗しました: {error}',
    'form.refused': '受け付けられませんでした: {error}',
    'form.force': '強制する（それでも実行する）',
    'field.subject': 'IPアドレスまたはネットワーク（CIDR）',
    'field.user': 'ユーザー',
    'field.allowSubject': 'IPアドレス、ネットワーク（CIDR）またはユーザー',
    'field.duration': '期間',
    'field.reason': '理由',
    'field.reasonPlaceholder': '任意（監査ログに残ります）',
    'field.banDurationHint': '例: 30m、2h、7d。空欄ならポリシーの既定期間（再犯なら延長）',
    'field.suspendDurationHint': '例: 30m、2h、7d。空欄ならポリシーの既定期間',
    'field.allowDurationHint': '例: 7d。空欄なら削除するまで有効',

    'col.subject': '対象',
    'col.user': 'ユーザー',
    'col.rule': 'ルール',
    'col.reason': '理由',
    'col.offence': '違反回数',
    'col.since': '開始',
    'col.ends': '終了',
    'col.by': '実行者',
    'col.kind': '種別',
    'col.source': '登録元',
    'col.countedAs': 'カウント対象',
    'col.count': '回数 / 上限',
    'col.window': '集計期間',
    'col.mode': 'モード',
    'col.then': '超過時',
    'col.time': '日時',
    'col.what': '内容',
    'col.evidence': '根拠',
    'col.event': 'イベント',
    'col.via': '経路',
    'col.action': '処置',

    'badge.decision': '判定',
    'event.login': 'ログイン試行',
    'badge.ban': 'BAN',
    'badge.unban': 'BAN解除',
    'badge.suspend': '一時停止',
    'badge.resume': '再開',
    'badge.limit': '制限',
    'badge.observe': '観測のみ',
    'badge.enforce': '適用',
    'badge.allow': '許可',
    'badge.delay': '遅延',
    'badge.tempfail': '一時拒否',
    'badge.reject': '拒否',
    'badge.hold': '保留',
    'badge.ip': 'IP',
    'badge.network': 'ネットワーク',
    'badge.user': 'ユーザー',
    'badge.config': '設定ファイル',
    'badge.runtime': '手動追加',
    'badge.allowlisted': '許可リスト登録済み',

    'stat.bans': '有効なBAN',
    'stat.suspended': '一時停止中のユーザー',
    'stat.postfix': 'Postfix の問い合わせ',
    'stat.dovecot': 'Dovecot の認証チェック',
    'stat.keys': 'カウンターキー',
    'stat.uptime': '稼働時間',
    'stat.overBudget': '時間超過 {n} 件',
    'stat.refusedDelayed': '拒否 {refused} · 遅延 {delayed}',
    'stat.backend': 'ストア: {backend}',

    'chart.decisions': '判定数（10秒ごと）',
    'chart.failures': 'ログイン失敗（10秒ごと）',
    'chart.flowTitle': '送信量制限の発動（10秒ごと）',
    'chart.flow': '送信量制限',
    'chart.other': 'その他',
    'chart.time': '時刻',
    'chart.lastHour': '直近1時間',
    'chart.steps': '直近1時間 · {step}秒間隔',
    'chart.empty': 'まだデータがありません。',

    'top.title': '違反の多い送信元',
    'top.note': '直近1時間の拒否とログイン失敗',
    'top.ips': 'IPアドレス',
    'top.networks': 'ネットワーク',
    'top.users': 'ユーザー',
    'top.nobody': '直近1時間は該当なし。',

    'events.latest': '最新のイベント',
    'events.all': 'すべてのイベント →',
    'events.title': 'ライブイベント',
    'events.filter': '絞り込み',
    'events.filterLabel': 'イベントを絞り込む',
    'events.pause': '表示を止める',
    'events.resume': '表示を再開',
    'events.clear': 'クリア',
    'events.note': '新しい順に最新 {max} 件まで表示。ログイン試行1回につき1行。',
    'events.pausedNote': '停止中: 新しいイベントは表示されません。',
    'events.none': 'このページを開いてからのイベントはありません。',
    'events.unavailable': 'このデーモンはライブイベントに対応していません。',
    'link.connecting': '接続中…',
    'link.live': 'ライブ',
    'link.down': '再接続中…',
    'link.unavailable': '利用不可',

    'bans.title': 'BAN一覧',
    'bans.active': '有効 {n} 件',
    'bans.matching': '該当 {n} 件',
    'bans.search': 'アドレス・ネットワーク・ルール・理由で検索',
    'bans.searchLabel': 'BANを検索',
    'bans.none': '有効なBANはありません。',
    'bans.noMatch': '「{q}」に一致するBANはありません。',
    'bans.add': 'BANを追加',
    'bans.addFor': '{subject} をBAN',
    'bans.submit': 'BANする',
    'bans.unban': 'BAN解除',
    'bans.unbanQuestion':
      '{subject} のBANを解除しますか？ すぐに接続・ログインできるようになります（違反履歴は残ります）。',
    'bans.unbanYes': '解除する',
    'bans.unbanned': '{subject} のBANを解除しました。',
    'bans.gone': '{subject} はすでにBANされていません。',
    'bans.made': '{subject} を {until}（{rel}）までBANしました。',

    'page.previous': '← 前へ',
    'page.next': '次へ →',
    'page.range': '{total} 件中 {from}–{to} 件',

    'users.title': '一時停止中のユーザー',
    'users.none': '一時停止中のユーザーはいません。',
    'users.suspend': 'ユーザーを一時停止',
    'users.suspendFor': '{user} を一時停止',
    'users.submit': '一時停止する',
    'users.resume': '再開',
    'users.resumeQuestion': '{user} を再開しますか？ すぐにログインとメール送信ができるようになります。',
    'users.resumeYes': '再開する',
    'users.resumed': '{user} の一時停止を解除しました。',
    'users.gone': '{user} はすでに一時停止されていません。',
    'users.made': '{user} を {until}（{rel}）まで一時停止しました。',

    'allow.title': '許可リスト',
    'allow.intro':
      'ここにあるアドレス・ネットワーク・ユーザーはカウントはされますが、制限やBANはされません。設定ファイル由来の項目は設定ファイルで、それ以外はこの画面か `mailwarden allow` で変更します。',
    'allow.add': '許可リストに追加',
    'allow.submit': '追加する',
    'allow.added': '{subject} を許可リストに追加しました。',
    'allow.bansOverlap':
      '次のBANはこの項目とアドレスが重なっています。BANは残りますが、重なるアドレスには効かなくなります: {bans}',
    'allow.remove': '削除',
    'allow.removeQuestion': '{subject} を許可リストから削除しますか？ すぐに制限・BANの対象に戻ります。',
    'allow.removeYes': '削除する',
    'allow.removed': '{subject} を許可リストから削除しました。',
    'allow.gone': '{subject} は許可リストにありません。',
    'allow.none': '許可リストは空です。',
    'allow.inConfig': '設定ファイルで管理',
    'allow.configHint': 'この項目を変更するには、設定ファイルの allowlist を編集して再読み込みしてください。',

    'explain.heading': '調査',
    'explain.placeholder': 'IPアドレス、ネットワーク（CIDR）またはユーザー',
    'explain.submit': '調べる',
    'explain.title': '{subject} を調べる',
    'explain.intro':
      'アドレスが拒否された理由やユーザーが一時停止された理由を調べます。上に入力すると、BAN、各ルールのカウンター、監査ログを表示します。',
    'explain.allowlisted.ip': '{subject} は許可リストに登録されています。カウントはされますが、制限やBANはされません。',
    'explain.allowlisted.user':
      '{subject} は許可リストに登録されています。カウントはされますが制限はされません（接続元アドレスのBANと手動の一時停止は適用されます）。',
    'explain.banned': 'BAN中: {subject}（期限 {until}、実行者 {actor}、ルール {rule}、違反 {offence} 回目）: {reason}',
    'explain.suspended': '一時停止中: {user}（期限 {until}、実行者 {actor}、ルール {rule}）: {reason}',
    'explain.atLimit': '上限到達: ルール {rule} で {subject} が {window} あたり {count}/{limit}。発動時の処置: {acts}',
    'explain.observed':
      'ルール {rule} で {subject} が {window} あたり {count}/{limit}（観測のみ。適用時の処置: {acts}）',
    'explain.clear': '{subject} はBAN・一時停止されておらず、処置の対象となる上限にも達していません。',
    'explain.counters': 'カウンター',
    'explain.noCounters': 'この対象をカウントするルールはありません。',
    'explain.audit': '監査ログ',
    'explain.newestFirst': '新しい順',
    'explain.noAudit': '記録はありません。',

    'degraded.title': '機能低下: 永続化',
    'degraded.error': 'データディレクトリへの書き込みに失敗しています',
    'degraded.queued': '書き込み待ち {n} 件',
    'degraded.note': 'BANはメモリ上で適用され、ディスクが復旧しだい書き込まれます。',
    'firewall.title': '機能低下: ファイアウォール',
    'firewall.note': 'BANは応答での拒否のみ有効で、カーネルでは遮断されていません。再試行中です。',
    'reputation.title': 'ブロックリスト掲載:',
    'reputation.listed': '{subject} が {zone} に掲載されています（{codes}）。',

    'time.noEnd': '無期限',
    'span.s': '{s}秒',
    'span.ms': '{m}分{s}秒',
    'span.hm': '{h}時間{m}分',
    'span.dh': '{d}日{h}時間',
    'rel.future': '{span}後',
    'rel.past': '{span}前',
    'date.sep': '/',
  },
};

let current = 'en';

/** Chooses the language; anything but a known one is English. */
export function setLocale(lang) {
  current = Object.hasOwn(STRINGS, lang) ? lang : 'en';
  if (globalThis.document) document.documentElement.lang = current;
}

export const locale = () => current;

/** The text of `key` in the current language with its {placeholders} left in; the key itself if unknown. */
export const template = (key) => STRINGS[current][key] ?? key;

/** The text of `key` with each {name} replaced by vars[name]. */
export function t(key, vars = {}) {
  return template(key).replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

const pad = (n) => String(n).padStart(2, '0');

/** A local date and time: 2026-12-03 14:05:09, in Japanese 2026/12/03 14:05:09. */
export function fmtTime(ms) {
  if (!Number.isFinite(ms)) return '—';
  const d = new Date(ms);
  const sep = t('date.sep');
  return `${d.getFullYear()}${sep}${pad(d.getMonth() + 1)}${sep}${pad(d.getDate())} ${fmtClock(ms)}`;
}

export function fmtClock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A length of time in its two largest units: 45s, 3m 05s, 2h 05m, 3d 4h. */
export function fmtSpan(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return t('span.s', { s });
  const m = Math.floor(s / 60);
  if (m < 60) return t('span.ms', { m, s: pad(s % 60) });
  const h = Math.floor(m / 60);
  if (h < 48) return t('span.hm', { h, m: pad(m % 60) });
  return t('span.dh', { d: Math.floor(h / 24), h: h % 24 });
}

export function fmtRelative(ms, now = Date.now()) {
  if (!Number.isFinite(ms)) return '';
  const diff = (ms - now) / 1000;
  return diff >= 0 ? t('rel.future', { span: fmtSpan(diff) }) : t('rel.past', { span: fmtSpan(-diff) });
}

export const fmtNum = (n) => (typeof n === 'number' ? n.toLocaleString(current) : '—');
