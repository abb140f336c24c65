/*
 * store/redis-lua — the Lua scripts of the Redis store (store/redis.ts).
 *
 * Each script runs atomically inside Redis, so one event is one round trip at
 * most (APPLY takes a batch of them) and no other node can slip between a
 * check and its charge. APPLY and PEEK mirror
 * store/counting.ts and MemoryStore.applySync line for line (same GCRA
 * arithmetic and float tolerance, same distinct-set cap and pruning, same
 * usual-rate decay, same charging rules); COMMIT mirrors MemoryStore.commit
 * and MemoryStore.ban (escalation, IPv6 aggregation).
 *
 * Time: `now` is Redis's own clock (TIME, in whole ms) unless the caller passes
 * one (tests only), so nodes with skewed clocks agree. Numbers go in and out as
 * strings: Lua numbers are doubles like JavaScript's, and `%.17g` round-trips
 * them exactly (Redis turns a Lua number in a reply into an integer).
 *
 * Keys (P is the tagged prefix, `{mailwarden}:` by default: every key of every
 * script hashes to the one slot of the tag, so no script can fail with
 * CROSSSLOT on Redis Cluster):
 *   P c:<counter key>   string TAT (rate) | zset member→last seen (distinct) | hash r,t (usual rate)
 *   P ban:<subject>     hash: the ban record          P bans   zset subject→until (listing)
 *   P blen              hash: <family>/<length> → latest until of a ban of that length, and v, its version
 *   P blz:<fam>/<len>   zset subject→until: the bans of one prefix length (keeps blen right through lifts)
 *   P susp:<user>       hash: the suspension record   P susps  zset user→until
 *   P off:<subject>     zset of offence times (escalation look-back)
 *   P agg:<prefix>      hash banned /64 → until (IPv6 aggregation); P aggof:<member> its prefixes
 *   P audit:<subject>   stream of audit rows (capped);  P audit:seq row ids;  P athr:<rule>|<subject> throttle
 *   channel P events    ban / unban / suspend / resume, for the nodes' local caches, each numbered from
 *   P evseq             the number of the latest of them (a node's cache that has not seen it is behind)
 * Every key has a TTL: its natural end (TAT, window, ban end, look-back, audit retention).
 */

/** Helpers every script shares. */
const COMMON = `
if redis.replicate_commands then redis.replicate_commands() end
local function num(x) return string.format('%.17g', x) end
local function clock(arg)
  if arg ~= nil and arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local EPS = 2 ^ -52
-- counting.ts slack(): float rounding must not turn exactly limit into limit+epsilon
local function slack(tat, limit, interval)
  return math.min(interval / 2, (limit + 1) * math.abs(tat) * EPS)
end
-- counting.ts gcra()
local function gcra(stored, now, cost, limit, window)
  local interval = window / limit
  local base = now
  if stored ~= nil and stored > now then base = stored end
  local tat = base + cost * interval
  local s = slack(tat, limit, interval)
  local count = math.ceil((tat - now - s) / interval)
  return tat, count, (tat - now > window + s)
end
-- counting.ts gcraCount()
local function gcraCount(stored, now, limit, window)
  if stored == nil or stored <= now then return 0 end
  local interval = window / limit
  return math.max(0, math.ceil((stored - now - slack(stored, limit, interval)) / interval))
end
-- counting.ts usualRate()
local function usualRate(r, t, now, tau)
  if r == nil then return 0 end
  return r * math.exp(-math.max(0, now - t) / tau)
end
-- A rate counter's TAT; a key holding another kind of counter (a rule changed its count) reads as new.
local function rateOf(k)
  local v = redis.pcall('GET', k)
  if type(v) == 'string' then return tonumber(v) end
  return nil
end
-- A usual rate: r, t; the third value says the key holds another kind of counter.
local function usualOf(k)
  local v = redis.pcall('HMGET', k, 'r', 't')
  if v.err then return nil, nil, true end
  if v[1] then return tonumber(v[1]), tonumber(v[2]), false end
  return nil, nil, false
end
-- counting.ts isPending(): an in-flight member sits half a ms past a whole one
local function isPending(t) return t % 1 ~= 0 end
-- MemoryStore.readCount(): another rule's count, without charging (confirmed members only, as DistinctSet.confirmed()).
local function readCount(k, of, now, rateLimit, window)
  if of == 'rate' then return gcraCount(rateOf(k), now, rateLimit, window) end
  local live = redis.pcall('ZRANGEBYSCORE', k, '(' .. num(now - window), '+inf', 'WITHSCORES')
  if type(live) ~= 'table' or live.err then return 0 end
  local n = 0
  for i = 2, #live, 2 do if not isPending(tonumber(live[i])) then n = n + 1 end end
  return n
end
`;

/**
 * The prefix lengths some ban in force has, so that APPLY looks up only those (MemoryStore's
 * BanTable keeps the same count): `P blen` holds each length's latest ban end and a version that
 * changes whenever the set of lengths does. A node builds its ban keys from the set it learnt and
 * sends that version; APPLY answers the current set instead when they differ (store/redis.ts).
 * No bans: no `blen` (version ''). A `blen` missing while bans exist (made before it existed) is
 * rebuilt from `P bans`. A length whose bans all ended goes at the next ban or lift, or with the key.
 */
const BANLENS = `
local function lenOf(subject)
  local fam = string.find(subject, ':', 1, true) and '6' or '4'
  local slash = string.find(subject, '/', 1, true)
  if slash then return fam .. string.sub(subject, slash) end
  return fam .. (fam == '6' and '/128' or '/32')
end
-- The latest end among one length's bans, dropping ended ones; nil when none is left.
local function latestOf(P, len, now)
  local z = P .. 'blz:' .. len
  redis.call('ZREMRANGEBYSCORE', z, '-inf', num(now))
  local top = redis.call('ZREVRANGE', z, 0, 0, 'WITHSCORES')
  if #top == 0 then return nil end
  redis.call('PEXPIRE', z, math.max(1, math.ceil(tonumber(top[2]) - now)))
  return top[2]
end
-- Writes the lengths (length -> latest end); a new version if the set changed. A fresh index
-- starts its versions from the clock, so no node can still hold one of an earlier index.
local function saveLens(P, lens, changed, now)
  local hk = P .. 'blen'
  local v = tonumber(redis.call('HGET', hk, 'v') or '')
  redis.call('DEL', hk)
  local flat, last = {}, nil
  for len, u in pairs(lens) do
    flat[#flat + 1] = len
    flat[#flat + 1] = u
    if last == nil or tonumber(u) > last then last = tonumber(u) end
  end
  if last == nil then return end
  if v == nil then
    local t = redis.call('TIME')
    v = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  if changed then v = v + 1 end
  redis.call('HSET', hk, 'v', num(v), unpack(flat))
  redis.call('PEXPIRE', hk, math.max(1, math.ceil(last - now)))
end
local function rebuildLens(P, now)
  local all = redis.call('ZRANGEBYSCORE', P .. 'bans', '(' .. num(now), '+inf', 'WITHSCORES')
  local lens = {}
  for i = 1, #all, 2 do
    local len = lenOf(all[i])
    redis.call('ZADD', P .. 'blz:' .. len, all[i + 1], all[i])
    lens[len] = true
  end
  for len in pairs(lens) do lens[len] = latestOf(P, len, now) end
  saveLens(P, lens, true, now)
end
-- After a ban (untilT) or a lift (nil) of a subject, once P bans holds the change.
local function indexBan(P, subject, untilT, now)
  local hk = P .. 'blen'
  if redis.call('EXISTS', hk) == 0 then return rebuildLens(P, now) end
  local len = lenOf(subject)
  if untilT then redis.call('ZADD', P .. 'blz:' .. len, num(untilT), subject)
  else redis.call('ZREM', P .. 'blz:' .. len, subject) end
  local all = redis.call('HGETALL', hk)
  local lens, changed, had = {}, false, false
  for i = 1, #all, 2 do
    local f = all[i]
    if f == len then had = true
    elseif f ~= 'v' then
      if tonumber(all[i + 1]) > now then lens[f] = all[i + 1] else
        redis.call('DEL', P .. 'blz:' .. f)
        changed = true
      end
    end
  end
  lens[len] = latestOf(P, len, now)
  if had ~= (lens[len] ~= nil) then changed = true end
  saveLens(P, lens, changed, now)
end
`;

/** How long `P evseq` outlives its last ban event (it starts again from the clock after). */
const EVSEQ_TTL_MS = 30 * 86_400_000;

/** Rows kept in the stream of every subject's audit rows (the per-subject streams keep their own). */
export const AUDITLOG_MAX = 50_000;

/** State-changing helpers (records, audit, pub/sub) of the commit, unban, resume and restore scripts. */
const RECORDS = `${BANLENS}
local P = ARGV[2]
local node = ARGV[3]
local auditTtl = tonumber(ARGV[5])
local auditMax = ARGV[6]
local function field(flat, name)
  for i = 1, #flat, 2 do if flat[i] == name then return flat[i + 1] end end
  return nil
end
local function activeUntil(key, now)
  local u = tonumber(redis.call('HGET', key, 'until') or '')
  if u ~= nil and u > now then return u end
  return nil
end
local function putIndex(idx, member, untilT, now)
  redis.call('ZADD', idx, num(untilT), member)
  redis.call('ZREMRANGEBYSCORE', idx, '-inf', num(now))
  local ttl = math.max(1, math.ceil(untilT - now))
  if redis.call('PTTL', idx) < ttl then redis.call('PEXPIRE', idx, ttl) end
end
local function audit(time, kind, subject, rule, reason, actor, ev, extra, who)
  local seq = P .. 'audit:seq'
  local id = redis.call('INCR', seq)
  redis.call('PEXPIRE', seq, auditTtl)
  local k = P .. 'audit:' .. subject
  redis.call('XADD', k, 'MAXLEN', '~', auditMax, '*', 'id', id, 't', num(time), 'k', kind, 's', subject,
    'r', rule, 'why', reason, 'a', actor, 'n', who or node, 'ev', ev, 'x', extra)
  redis.call('PEXPIRE', k, auditTtl)
  -- Every subject's rows in one stream too, by time, for the export (AUDITLOG_LUA).
  redis.call('XADD', P .. 'auditlog', 'MAXLEN', '~', ${AUDITLOG_MAX}, '*', 'id', id, 't', num(time), 'k', kind,
    's', subject, 'r', rule, 'why', reason, 'a', actor, 'n', who or node, 'ev', ev, 'x', extra)
  redis.call('PEXPIRE', P .. 'auditlog', auditTtl)
end
-- Every message carries the next number of P evseq (its last element, as text: cjson would round it), so a
-- node can tell that its mirror missed one (APPLY answers the latest). A new evseq starts from the clock, so
-- its numbers never go back.
local function publish(msg)
  local seqKey = P .. 'evseq'
  if redis.call('EXISTS', seqKey) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', seqKey, string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2])))
  end
  msg[#msg + 1] = string.format('%d', redis.call('INCR', seqKey))
  redis.call('PEXPIRE', seqKey, ${EVSEQ_TTL_MS})
  redis.call('PUBLISH', P .. 'events', cjson.encode(msg))
end
local function banJson(flat)
  return '{"subject":' .. cjson.encode(field(flat, 'subject')) .. ',"since":' .. field(flat, 'since') ..
    ',"until":' .. field(flat, 'until') .. ',"rule":' .. cjson.encode(field(flat, 'rule')) ..
    ',"reason":' .. cjson.encode(field(flat, 'reason')) .. ',"offence":' .. field(flat, 'offence') ..
    ',"actor":' .. cjson.encode(field(flat, 'actor')) .. '}'
end
local function suspJson(flat)
  return '{"user":' .. cjson.encode(field(flat, 'user')) .. ',"since":' .. field(flat, 'since') ..
    ',"until":' .. field(flat, 'until') .. ',"rule":' .. cjson.encode(field(flat, 'rule')) ..
    ',"reason":' .. cjson.encode(field(flat, 'reason')) .. ',"actor":' .. cjson.encode(field(flat, 'actor')) .. '}'
end
local function putBan(subject, since, untilT, rule, reason, offence, actor, who, now)
  local bk = P .. 'ban:' .. subject
  redis.call('DEL', bk)
  redis.call('HSET', bk, 'subject', subject, 'since', num(since), 'until', num(untilT), 'rule', rule,
    'reason', reason, 'offence', num(offence), 'actor', actor, 'node', who)
  redis.call('PEXPIRE', bk, math.max(1, math.ceil(untilT - now)))
  putIndex(P .. 'bans', subject, untilT, now)
  indexBan(P, subject, untilT, now)
  publish({ 'ban', subject, num(since), num(untilT), rule, reason, num(offence), actor })
end
local function addOffence(subject, time, lookback)
  local ok = P .. 'off:' .. subject
  redis.call('ZADD', ok, num(time), num(time) .. ':' .. (redis.call('ZCARD', ok) + 1))
  redis.call('PEXPIRE', ok, math.max(1, math.ceil(lookback)))
end
local function putSusp(user, since, untilT, rule, reason, actor, who, now)
  local sk = P .. 'susp:' .. user
  redis.call('DEL', sk)
  redis.call('HSET', sk, 'user', user, 'since', num(since), 'until', num(untilT), 'rule', rule, 'reason', reason,
    'actor', actor, 'node', who)
  redis.call('PEXPIRE', sk, math.max(1, math.ceil(untilT - now)))
  putIndex(P .. 'susps', user, untilT, now)
  publish({ 'suspend', user, num(since), num(untilT), rule, reason, actor })
end
-- MemoryStore.unban(): also drops the network from every IPv6 aggregate it counted towards.
local function dropBan(subject, now)
  local bk = P .. 'ban:' .. subject
  redis.call('DEL', bk)
  redis.call('ZREM', P .. 'bans', subject)
  indexBan(P, subject, nil, now)
  local of = P .. 'aggof:' .. subject
  for _, pre in ipairs(redis.call('SMEMBERS', of)) do redis.call('HDEL', P .. 'agg:' .. pre, subject) end
  redis.call('DEL', of)
  publish({ 'unban', subject })
end
local function dropSusp(user)
  redis.call('DEL', P .. 'susp:' .. user)
  redis.call('ZREM', P .. 'susps', user)
  publish({ 'resume', user })
end
`;

/**
 * APPLY — MemoryStore.applySync, for each of a batch of decisions in turn (the decisions a node asks in
 * one turn of its event loop: one round trip, and the script's own cost, for all of them; each is
 * applied in full before the next, as separate calls in that order would be): ban and suspension
 * lookups, then every counter computed, then whether the event passes (engine/gate.ts), then each
 * charged as its op says.
 * KEYS: P blen, then per decision: its ban keys (nb), its suspension key (ns = 0|1), one counter key per op.
 * ARGV: the blen version the ban keys were built for, DISTINCT_CAP, EWMA_TTL_TAUS, the number of decisions,
 *   then per decision: now|'', nb, ns, known-good op, shared op (1-based, 0: none), users that make an
 *   address shared, the number of ops, then 6 per op:
 *   type (r rate, d distinct, R read, e ewma),
 *   charge (p if-pass, c if-conform, a always, n never, P pending, S settle, F forget), then
 *   rate: cost, limit, window, flags | distinct: member, limit, window, flags | read: of, limit, rateLimit, window |
 *   ewma: cost, tau, window, withSelf.
 * Returns per decision a string, now then per op its count, exceeded (1|0) and seen (1|0, - for none), separated
 * by spaces; with a ban or suspension in force, the list of that string, the ban and the suspension (flat hashes,
 * empty for none); after the decisions, the number of the latest ban event (P evseq). Or, when the ban keys were
 * built for another set of prefix lengths: 'lengths', version, blen (flat), and nothing was read or charged.
 */
export const APPLY_LUA = `${COMMON}${BANLENS}
local lensKey = KEYS[1]
-- the number of the latest ban event (RECORDS publish()), answered after the decisions
local evseq = redis.call('GET', string.sub(lensKey, 1, -5) .. 'evseq') or '0'
local serverNow = nil
-- Redis's clock is read once per batch: its decisions are one moment.
local function nowOf(arg)
  if arg ~= '' then return tonumber(arg) end
  if serverNow == nil then serverNow = clock('') end
  return serverNow
end
local version = redis.call('HGET', lensKey, 'v')
if not version then
  local P = string.sub(lensKey, 1, -5)
  local first = nowOf(ARGV[5])
  if redis.call('ZCOUNT', P .. 'bans', '(' .. num(first), '+inf') > 0 then
    rebuildLens(P, first)
    version = redis.call('HGET', lensKey, 'v')
  end
end
version = version or ''
if version ~= ARGV[1] then return { 'lengths', version, redis.call('HGETALL', lensKey) } end
local CAP, TAUS = tonumber(ARGV[2]), tonumber(ARGV[3])
local floor, ceil, max, concat = math.floor, math.ceil, math.max, table.concat
local function bit(f, b) return floor(f / b) % 2 == 1 end
-- A count as text: whole numbers (rate and distinct counts) without the cost of a float's 17 digits.
local function countText(c)
  if c == floor(c) and c > -1e15 and c < 1e15 then return string.format('%d', c) end
  return num(c)
end
-- Per-op scratch, reused by every decision of the batch (each slot 1..nops is written before it is read).
local exceeded, counts, seens, tats, other, ewR, ewT, was, hold, flags = {}, {}, {}, {}, {}, {}, {}, {}, {}, {}
local nowText, textOf = nil, nil
-- One decision: its keys from KEYS[kb + 1], its ops' arguments from ARGV[G + 1].
local function applyOne(now, kb, G, nb, ns, KG, SH, SHMIN, nops)
  -- the longest-lasting active ban covering the client
  local ban, banUntil = nil, nil
  for i = 1, nb do
    local u = tonumber(redis.call('HGET', KEYS[kb + i], 'until') or '')
    if u ~= nil and u > now and (banUntil == nil or u > banUntil) then
      banUntil = u
      ban = redis.call('HGETALL', KEYS[kb + i])
    end
  end
  local susp = nil
  if ns == 1 then
    local k = KEYS[kb + nb + 1]
    local u = tonumber(redis.call('HGET', k, 'until') or '')
    if u ~= nil and u > now then susp = redis.call('HGETALL', k) end
  end
  local base = kb + nb + ns
  -- the batch's decisions mostly share one moment: written once
  if now ~= nowText then nowText, textOf = now, num(now) end
  -- now and the counts as one string: one reply element to read instead of three per op
  local out = { textOf }
  for i = 1, nops do
    local a = G + (i - 1) * 6
    local t, k = ARGV[a + 1], KEYS[base + i]
    local count, ex, seen = 0, false, '-'
    other[i], was[i], flags[i] = false, nil, 0
    if t == 'r' then
      local tat
      tat, count, ex = gcra(rateOf(k), now, tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]))
      tats[i], flags[i] = tat, tonumber(ARGV[a + 6]) or 0
    elseif t == 'd' then
      local member, limit, window = ARGV[a + 3], tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
      flags[i] = tonumber(ARGV[a + 6]) or 0
      -- ZCARD first: a set that is not there yet (a new source's) costs one call, not three
      local size = redis.pcall('ZCARD', k)
      if type(size) == 'table' then
        -- another kind of counter under this key: the set reads as new
        other[i] = true
        count, seen = 1, '0'
      else
        if size > 0 then size = size - redis.call('ZREMRANGEBYSCORE', k, '-inf', num(now - window)) end
        local has = size > 0 and redis.call('ZSCORE', k, member)
        if has then
          count, seen = size, '1'
          was[i] = tonumber(has)
        else
          count, seen = size + 1, '0'
        end
      end
      ex = count > limit
    elseif t == 'R' then
      count = readCount(k, ARGV[a + 3], now, tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]))
      ex = count >= tonumber(ARGV[a + 4])
    else
      local cost, tau, window = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
      local r, rt, wrong = usualOf(k)
      ewR[i], ewT[i], other[i] = r, rt, wrong
      count = usualRate(r, rt, now, tau) * window
      if ARGV[a + 6] == '1' then count = count + cost end
    end
    exceeded[i], counts[i], seens[i] = ex, count, seen
    out[#out + 1] = countText(count)
    out[#out + 1] = ex and '1' or '0'
    out[#out + 1] = seen
  end
  local text = concat(out, ' ')
  local pass = banUntil == nil and susp == nil
  -- gate.ts gateContext(), holds() and passes()
  local knownGood = KG > 0 and seens[KG] == '1'
  local shared = false
  if SH > 0 and SHMIN > 0 then
    local users = counts[SH]
    if seens[SH] ~= '1' then users = users - 1 end
    shared = users >= SHMIN
  end
  for i = 1, nops do
    local f = flags[i]
    -- gate.ts holds()
    local h = not bit(f, shared and 8 or 4)
    hold[i] = h
    if pass and exceeded[i] and bit(f, 1) and h and not (knownGood and bit(f, 2)) then pass = false end
  end
  -- Charge as each op says: if the event passes, if this counter conforms, always, or never;
  -- in-flight members as pending, settled or forgotten.
  for i = 1, nops do
    local a = G + (i - 1) * 6
    local t, charge = ARGV[a + 1], ARGV[a + 2]
    if t ~= 'R' and charge ~= 'n' and hold[i] then
      local k, ex = KEYS[base + i], exceeded[i]
      if t == 'd' and (charge == 'S' or charge == 'F') then
        if was[i] ~= nil and not other[i] and (charge == 'F' or isPending(was[i])) then redis.call('ZREM', k, ARGV[a + 3]) end
      elseif charge == 'a' or (charge == 'P' and pass) or (charge == 'p' and pass and not ex) or (charge == 'c' and not ex) then
        if t == 'r' then
          redis.call('SET', k, num(tats[i]), 'PX', max(1, ceil(tats[i] - now)))
        elseif t == 'd' then
          local member, window = ARGV[a + 3], tonumber(ARGV[a + 5])
          -- counting.ts memberTime(): a pending charge keeps a confirmed member confirmed
          local time = floor(now)
          if charge == 'P' and (was[i] == nil or isPending(was[i])) then time = time + 0.5 end
          if other[i] then redis.call('DEL', k) end
          -- A member seen again gets its new time (and so its place); a new one fits while the set, as read
          -- above with it, holds at most CAP. Read above is still current: a plan charges a key once (one op
          -- per rule, and rule ids are unique).
          if was[i] ~= nil or counts[i] <= CAP then redis.call('ZADD', k, num(time), member) end
          redis.call('PEXPIRE', k, max(1, ceil(window)))
        else
          local cost, tau = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
          if other[i] then redis.call('DEL', k) end
          -- counting.ts usualAdd()
          local r = usualRate(ewR[i], ewT[i], now, tau) + cost / tau
          redis.call('HSET', k, 'r', num(r), 't', num(now))
          redis.call('PEXPIRE', k, max(1, ceil(tau * TAUS)))
        end
      end
    end
  end
  if ban == nil and susp == nil then return text end
  return { text, ban or {}, susp or {} }
end
local results = {}
local kb, a = 1, 4
for d = 1, tonumber(ARGV[4]) do
  local nb, ns, nops = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 7])
  results[d] = applyOne(nowOf(ARGV[a + 1]), kb, a + 7, nb, ns,
    tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]), nops)
  kb = kb + nb + ns + nops
  a = a + 7 + 6 * nops
end
results[#results + 1] = evseq
return results
`;

/**
 * PEEK — MemoryStore.peek: current counts without charging (read-only).
 * KEYS: one counter key per op. ARGV: now|'', then 6 per op as in APPLY. Returns now, counts.
 */
export const PEEK_LUA = `${COMMON}
local now = clock(ARGV[1])
local out = { num(now) }
for i = 1, (#ARGV - 1) / 6 do
  local a = 1 + (i - 1) * 6
  local t, k = ARGV[a + 1], KEYS[i]
  local count
  if t == 'r' then
    count = gcraCount(rateOf(k), now, tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]))
  elseif t == 'R' then
    count = readCount(k, ARGV[a + 3], now, tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]))
  elseif t == 'e' then
    local r, rt = usualOf(k)
    count = usualRate(r, rt, now, tonumber(ARGV[a + 4])) * tonumber(ARGV[a + 5])
  else
    -- every live member, pending ones too (MemoryStore.peek)
    local n = redis.pcall('ZCOUNT', k, '(' .. num(now - tonumber(ARGV[a + 5])), '+inf')
    count = type(n) == 'number' and n or 0
  end
  out[#out + 1] = num(count)
end
return out
`;

/**
 * COMMIT — MemoryStore.commit + ban(): bans (escalated by the offence history,
 * one ban per offence, IPv6 aggregation) and suspensions, audited and published.
 * KEYS[1]: P bans (routes the call to the tag's slot). ARGV: now|'', P, node, actor, audit ttl,
 * audit max, then 13 per effect:
 *   b, subject, rule, reason, evidence json, base, factor, max, lookback, duration|'', agg prefix|'', member, threshold
 *   s, user, rule, reason, evidence json, duration, then 7 × ''
 * Returns a list of records: {'b', subject, since, until, rule, reason, offence, actor} | {'s', user, since, until, rule, reason, actor}.
 */
export const COMMIT_LUA = `${COMMON}${RECORDS}
local now = clock(ARGV[1])
local actor = ARGV[4]
local out = {}
local function ban(subject, rule, reason, ev, base, factor, max, lookback, duration, aggPrefix, aggMember, aggThreshold)
  local bk = P .. 'ban:' .. subject
  local exUntil = tonumber(redis.call('HGET', bk, 'until') or '')
  -- Several requests of one attack can fire the same rule before the ban lands; one offence is one ban.
  if exUntil ~= nil and exUntil > now and duration == nil then return end
  local ok = P .. 'off:' .. subject
  redis.call('ZREMRANGEBYSCORE', ok, '-inf', num(now - lookback))
  local offence = redis.call('ZCOUNT', ok, '(' .. num(now - lookback), '+inf') + 1
  -- decide.ts escalatedDuration()
  local length = duration or math.min(max, math.floor(base * factor ^ math.max(0, offence - 1) + 0.5))
  local untilT = now + length
  putBan(subject, now, untilT, rule, reason, offence, actor, node, now)
  addOffence(subject, now, lookback)
  audit(now, 'ban', subject, rule, reason, actor, ev, '{"until":' .. num(untilT) .. ',"offence":' .. num(offence) .. '}')
  out[#out + 1] = { 'b', subject, num(now), num(untilT), rule, reason, num(offence), actor }
  if aggPrefix ~= '' then
    -- member network -> until: count the networks inside the prefix whose ban is still active
    local ak = P .. 'agg:' .. aggPrefix
    local old = tonumber(redis.call('HGET', ak, aggMember) or '') or 0
    redis.call('HSET', ak, aggMember, num(math.max(old, untilT)))
    local all = redis.call('HGETALL', ak)
    local members, last = {}, now
    for j = 1, #all, 2 do
      local u = tonumber(all[j + 1])
      if u <= now then redis.call('HDEL', ak, all[j]) else
        members[#members + 1] = all[j]
        if u > last then last = u end
      end
    end
    redis.call('PEXPIRE', ak, math.max(1, math.ceil(last - now)))
    local of = P .. 'aggof:' .. aggMember
    redis.call('SADD', of, aggPrefix)
    if redis.call('PTTL', of) < math.ceil(untilT - now) then redis.call('PEXPIRE', of, math.max(1, math.ceil(untilT - now))) end
    if #members >= tonumber(aggThreshold) and activeUntil(P .. 'ban:' .. aggPrefix, now) == nil then
      local why = #members .. ' banned networks inside ' .. aggPrefix .. ' (threshold ' .. aggThreshold .. ')'
      local evidence = cjson.encode({ networks = members, trigger = subject })
      ban(aggPrefix, rule, why, evidence, base, factor, max, lookback, nil, '', '', '')
    end
  end
end
local function suspend(user, rule, reason, ev, duration)
  local sk = P .. 'susp:' .. user
  local exUntil = activeUntil(sk, now)
  local since = now
  if exUntil ~= nil then since = tonumber(redis.call('HGET', sk, 'since')) end
  local untilT = math.max(exUntil or 0, now + duration)
  putSusp(user, since, untilT, rule, reason, actor, node, now)
  audit(now, 'suspend', user, rule, reason, actor, ev, '{"until":' .. num(untilT) .. '}')
  out[#out + 1] = { 's', user, num(since), num(untilT), rule, reason, actor }
end
for i = 7, #ARGV, 13 do
  if ARGV[i] == 'b' then
    local duration = nil
    if ARGV[i + 9] ~= '' then duration = tonumber(ARGV[i + 9]) end
    ban(ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6]),
      tonumber(ARGV[i + 7]), tonumber(ARGV[i + 8]), duration, ARGV[i + 10], ARGV[i + 11], ARGV[i + 12])
  else
    suspend(ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 5]))
  end
end
return out
`;

/**
 * UNBAN / RESUME — MemoryStore.unban / resume: drop the record, audit it, publish.
 * KEYS[1]: P bans | P susps. ARGV: now|'', P, node, actor, audit ttl, audit max, kind (ban|susp), subject, reason.
 * Returns now and the record that was there (flat, or empty).
 */
export const LIFT_LUA = `${COMMON}${RECORDS}
local now = clock(ARGV[1])
local actor, kind, subject, reason = ARGV[4], ARGV[7], ARGV[8], ARGV[9]
local key = P .. (kind == 'ban' and 'ban:' or 'susp:') .. subject
local rec = redis.call('HGETALL', key)
if #rec == 0 then return { num(now), rec } end
if kind == 'ban' then
  dropBan(subject, now)
  audit(now, 'unban', subject, field(rec, 'rule'), reason, actor, '{}', '{"was":' .. banJson(rec) .. '}')
else
  dropSusp(subject)
  audit(now, 'resume', subject, field(rec, 'rule'), reason, actor, '{}', '{"was":' .. suspJson(rec) .. '}')
end
return { num(now), rec }
`;

/**
 * RESTORE — pushes what a node did while Redis was unreachable (store/resilient.ts).
 * KEYS[1]: P bans. ARGV: now|'', P, node, '', audit ttl, audit max, lookback, then 10 per item:
 *   B subject since until rule reason offence actor node ''   a ban (kept if Redis has none lasting as long)
 *   S user since until rule reason actor node '' ''            a suspension (likewise)
 *   U subject time '' × 7                                      a lift: applies to records made before it
 *   R user time '' × 7
 *   A time kind subject rule reason actor node evidence ''     an audit row
 * Returns how many items changed something.
 */
export const RESTORE_LUA = `${COMMON}${RECORDS}
local now = clock(ARGV[1])
local lookback = tonumber(ARGV[7])
local changed = 0
for i = 8, #ARGV, 10 do
  local t = ARGV[i]
  if t == 'B' then
    local subject, untilT = ARGV[i + 1], tonumber(ARGV[i + 3])
    local ex = tonumber(redis.call('HGET', P .. 'ban:' .. subject, 'until') or '')
    if untilT > now and (ex == nil or ex < untilT) then
      local since = tonumber(ARGV[i + 2])
      putBan(subject, since, untilT, ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 6]), ARGV[i + 7], ARGV[i + 8], now)
      addOffence(subject, since, lookback)
      changed = changed + 1
    end
  elseif t == 'S' then
    local user, untilT = ARGV[i + 1], tonumber(ARGV[i + 3])
    local ex = tonumber(redis.call('HGET', P .. 'susp:' .. user, 'until') or '')
    if untilT > now and (ex == nil or ex < untilT) then
      putSusp(user, tonumber(ARGV[i + 2]), untilT, ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], now)
      changed = changed + 1
    end
  elseif t == 'U' or t == 'R' then
    local subject, time = ARGV[i + 1], tonumber(ARGV[i + 2])
    local since = tonumber(redis.call('HGET', P .. (t == 'U' and 'ban:' or 'susp:') .. subject, 'since') or '')
    if since ~= nil and since <= time then
      if t == 'U' then dropBan(subject, now) else dropSusp(subject) end
      changed = changed + 1
    end
  elseif t == 'A' then
    audit(tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 8], '{}', ARGV[i + 7])
    changed = changed + 1
  end
end
return changed
`;

/**
 * HITS — MemoryStore.recordHits: one audit row per rule and subject per minute, shared by all nodes.
 * KEYS[1]: P bans. ARGV: now|'', P, node, '', audit ttl, audit max, throttle ms, then 5 per hit:
 * rule, subject, reason, kind (limit|observe), evidence json.
 */
export const HITS_LUA = `${COMMON}${RECORDS}
local now = clock(ARGV[1])
local throttle = tonumber(ARGV[7])
for i = 8, #ARGV, 5 do
  local rule, subject = ARGV[i], ARGV[i + 1]
  local tk = P .. 'athr:' .. rule .. '|' .. subject
  local last = tonumber(redis.call('GET', tk) or '')
  if last == nil or now - last >= throttle then
    redis.call('SET', tk, num(now), 'PX', throttle)
    audit(now, ARGV[i + 3], subject, rule, ARGV[i + 2], 'mailwarden', ARGV[i + 4], '{}')
  end
end
return 1
`;

/**
 * LIST — active bans or suspensions. KEYS[1]: P bans | P susps. ARGV: now|'', P, kind (ban|susp).
 * Returns now, then one flat hash per record.
 */
export const LIST_LUA = `${COMMON}
local now = clock(ARGV[1])
local P, kind = ARGV[2], ARGV[3]
local out = { num(now) }
for _, s in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. num(now), '+inf')) do
  local rec = redis.call('HGETALL', P .. kind .. ':' .. s)
  if #rec > 0 then out[#out + 1] = rec end
end
return out
`;

/**
 * AUDIT — the newest audit rows of some subjects. KEYS[1]: P bans. ARGV: P, limit, subjects…
 * Returns one flat field list per row (unsorted across subjects).
 */
export const AUDIT_LUA = `
local P, limit = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV do
  for _, e in ipairs(redis.call('XREVRANGE', P .. 'audit:' .. ARGV[i], '+', '-', 'COUNT', limit)) do
    out[#out + 1] = e[2]
  end
end
return out
`;

/**
 * AUDITLOG — MemoryStore.auditSearch: rows newest first from a time on (the row's own time, as
 * the node that wrote it saw it), of every subject or one. ARGV: P, since (epoch ms),
 * subject|'', limit, offset. Returns the total, then the page's rows. The streams are capped
 * (AUDITLOG_MAX, the per-subject max), which bounds the walk.
 */
export const AUDITLOG_LUA = `
local P, since, subject = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local limit, offset = tonumber(ARGV[4]), tonumber(ARGV[5])
local key = P .. 'auditlog'
if subject ~= '' then key = P .. 'audit:' .. subject end
local out = { 0 }
for _, e in ipairs(redis.call('XREVRANGE', key, '+', '-')) do
  local f = e[2]
  local t = nil
  for i = 1, #f, 2 do if f[i] == 't' then t = tonumber(f[i + 1]) break end end
  if t ~= nil and t >= since then
    out[1] = out[1] + 1
    if out[1] > offset and out[1] <= offset + limit then out[#out + 1] = f end
  end
end
return out
`;

/** STATS — keys in the database (of the tag's node in a cluster), active bans and suspensions. KEYS[1]: P bans. ARGV: now|'', P. */
export const STATS_LUA = `${COMMON}
local now = clock(ARGV[1])
local P = ARGV[2]
return { num(now), redis.call('DBSIZE'), redis.call('ZCOUNT', P .. 'bans', '(' .. num(now), '+inf'),
  redis.call('ZCOUNT', P .. 'susps', '(' .. num(now), '+inf') }
`;
