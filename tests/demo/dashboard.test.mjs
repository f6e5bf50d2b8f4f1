// dashboard.test.mjs — the demo dashboard in a real browser (tests/integration/demo.sh runs it
// against deploy/demo.sh): playwright-core drives Debian's /usr/bin/chromium (headless, no
// sandbox, no GPU, no background networking; never a downloaded browser), opens the page with
// an analyst and a viewer side by side, writes known events into the demo org through psql
// (bodies encrypted with `walcast encrypt`, bound to the event id as the platform does), waits
// until both panes show them, and compares every pane with PostgreSQL's masking view
// walcast.events_masked queried AS THAT USER (RLS + masks: the oracle):
//   - the viewer's numbers are exactly the view's (masked), and a body the view hides is absent
//     or null on the page (never in clear); its own event's body it sees decrypted;
//   - the analyst sees every body the view gives it, decrypted to the plaintext written;
//   - the analyst, demoted to viewer in org_roles, sees the badge change and the events after the
//     demotion masked exactly as the view now masks them;
//   - the health line shows "ready" and a replication lag from /metrics;
//   - the charts of the stats API (deploy/demo/web/charts.js): the analyst's top contacts are a
//     list, the viewer's and the demoted analyst's say "not visible to viewer" exactly when the
//     API itself refuses that user (403); then, on the default page (owner and viewer), the
//     traffic generator runs (traffic.sh --keep-roles: the panes' users keep their roles) and
//     the charts must move while it writes; once it has stopped (nothing else writes), every
//     hour's calls, SMS and missed calls on both panes, and the owner's top contacts, must equal
//     SQL over public.events (the contacts through RLS as the owner), drawn from a request that
//     left after the generator's last commit — a chart that lags or froze cannot pass, and a
//     correct one gets up to a minute to catch up, so it does not flake.
// Screenshots go to WALCAST_DEMO_SHOTS (a directory). Environment: WALCAST_DEMO_URL, PG*,
// WALCAST_BIN and WALCAST_KEYS_FILE (walcast encrypt), WALCAST_DEMO_USERS (users.json).
import { execFileSync, spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { chromium } from 'playwright-core'

const URL = process.env.WALCAST_DEMO_URL
const SHOTS = process.env.WALCAST_DEMO_SHOTS || '.'
const SLOW = Number(process.env.WALCAST_DEMO_SLOW || '1')
const cfg = JSON.parse(fs.readFileSync(process.env.WALCAST_DEMO_USERS, 'utf8'))
const user = (role) => cfg.users.find((u) => u.role === role)
const analyst = user('analyst')
const viewer = user('viewer')
const owner = user('owner')
const ROOT = path.resolve(path.dirname(new globalThis.URL(import.meta.url).pathname), '../..')

let passed = 0
let failed = 0
function check(name, ok, detail = '') {
  if (ok) passed++
  else failed++
  console.log(`${ok ? 'ok' : 'not ok'} - ${name}${ok || !detail ? '' : ': ' + detail}`)
}

const psql = (sql) => execFileSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-At', '-f', '-'], { input: sql, encoding: 'utf8' }).trim()
const lit = (s) => (s === null ? 'NULL' : `'${String(s).replace(/'/g, "''")}'`)
// rows of QUERY as PostgreSQL shows them to UID (RLS through `authenticated` and its claims)
function asUser(uid, query) {
  const claims = JSON.stringify({ sub: uid, role: 'authenticated' })
  const out = psql(`set request.jwt.claims = ${lit(claims)}; set role authenticated;
select coalesce(jsonb_agg(t), '[]') from (${query}) t;`)
  return JSON.parse(out.split('\n').pop())
}

// the stats API as a token, from here (not through the page): {status, body}
async function statsAs(token, rest) {
  const r = await fetch(new globalThis.URL(`api/v1/stats/orgs/${cfg.org}/${rest}`, URL), { headers: { Authorization: `Bearer ${token}` } })
  return { status: r.status, body: await r.json().catch(() => null) }
}
const utcDay = () => new Date().toISOString().slice(0, 10)

// A pane's charts as drawn (charts.js's data-* attributes).
const chartsOf = (page, side) => page.evaluate((side) => {
  const box = (k) => document.getElementById(`${k}-${side}`)
  const hours = [...box('hours').querySelectorAll('g.hour')].map((g) => ({
    hour: g.dataset.hour, calls: Number(g.dataset.calls), sms: Number(g.dataset.sms),
  }))
  const missed = Object.fromEntries([...box('missed').querySelectorAll('g.hour')].map((g) => [g.dataset.hour, Number(g.dataset.missed)]))
  const c = box('contacts')
  return {
    hours, missed, hoursState: box('hours').dataset.state, hoursFetched: Number(box('hours').dataset.fetched || 0),
    total: Number(box('hours').dataset.calls || 0) + Number(box('hours').dataset.sms || 0),
    contacts: [...c.querySelectorAll('li')].map((li) => ({ contact: li.dataset.contact, events: Number(li.dataset.events) })),
    contactsState: c.dataset.state, contactsStatus: Number(c.dataset.status || 0), contactsDay: c.dataset.day,
    contactsFetched: Number(c.dataset.fetched || 0), contactsText: c.textContent,
  }
}, side)

// The oracle of the hour charts: the org's calls, SMS and missed calls per UTC hour in SQL.
function sqlHours() {
  const rows = JSON.parse(psql(`select coalesce(jsonb_agg(t), '[]') from (
  select to_char(date_trunc('hour', started_at at time zone 'UTC'), 'YYYY-MM-DD"T"HH24:00:00"Z"') as hour,
         count(*) filter (where kind = 'call') as calls, count(*) filter (where kind = 'sms') as sms,
         count(*) filter (where kind = 'call' and status = 'missed') as missed
    from public.events where org_id = ${lit(cfg.org)} and started_at >= now() - interval '50 hours' group by 1) t;`))
  return Object.fromEntries(rows.map((r) => [r.hour, r]))
}
// Differences between a pane's hour charts and SQL ([] when they agree), for 48 hours.
function hourDiffs(ch, sql) {
  const out = []
  if (ch.hours.length !== 48) out.push(`${ch.hours.length} hours drawn, not 48`)
  if (Object.keys(ch.missed).length !== 48) out.push(`${Object.keys(ch.missed).length} hours of missed calls drawn, not 48`)
  for (const h of ch.hours) {
    const want = sql[h.hour] || { calls: 0, sms: 0, missed: 0 }
    for (const f of ['calls', 'sms']) if (h[f] !== want[f]) out.push(`${h.hour} ${f}: chart ${h[f]}, SQL ${want[f]}`)
    if (ch.missed[h.hour] !== want.missed) out.push(`${h.hour} missed: chart ${ch.missed[h.hour]}, SQL ${want.missed}`)
  }
  const drawn = new Set(ch.hours.map((h) => h.hour))
  for (const [hour, r] of Object.entries(sql)) {
    if (!drawn.has(hour) && hour >= (ch.hours[0] || {}).hour) out.push(`${hour} (${r.calls} calls in SQL) not drawn`)
  }
  return out
}
// Differences between a pane's top contacts and what the user may count through RLS that day.
function contactDiffs(ch, uid) {
  const rows = asUser(uid, `select contact_id as contact, count(*)::int as events from public.events
    where org_id = ${lit(cfg.org)} and contact_id is not null and (started_at at time zone 'UTC')::date = ${lit(ch.contactsDay)} group by 1`)
  const sql = Object.fromEntries(rows.map((r) => [r.contact, r.events]))
  const top = Object.values(sql).sort((a, b) => b - a).slice(0, 10)
  const out = []
  if (ch.contacts.length !== top.length) out.push(`${ch.contacts.length} contacts drawn, SQL has ${top.length} for the top 10`)
  ch.contacts.forEach((c, i) => {
    if (sql[c.contact] !== c.events) out.push(`${c.contact.slice(0, 8)}: chart ${c.events}, SQL ${sql[c.contact]}`)
    if (top[i] !== c.events) out.push(`rank ${i + 1}: chart ${c.events} events, SQL's top has ${top[i]}`)
  })
  return out
}

async function waitFor(cond, ms) {
  const end = Date.now() + ms * SLOW
  for (;;) {
    const v = await cond()
    if (v || Date.now() > end) return v
    await new Promise((r) => setTimeout(r, 250))
  }
}

// The charts on the default page (owner and viewer) while the demo's generator writes, then
// against SQL once it has stopped.
async function chartsWhileTheGeneratorRuns(page) {
  const steady = cfg.users.filter((u) => u.steady)
  check('the page\'s default users are the generator\'s kept ones (owner, viewer)', steady.map((u) => u.name).join(',') === 'owner,viewer')
  check('the page says whose roles the generator keeps', /leaves the roles of owner and viewer alone/.test(await page.textContent('#steady')))
  const ready = await waitFor(async () => (await chartsOf(page, 'left')).hoursState === 'ok', 30000)
  check('the owner pane draws the hourly charts', !!ready)
  const before = sqlHours()
  const since = psql('select now()')
  const gen = spawn('bash', [path.join(ROOT, 'deploy/demo/traffic.sh'), '--orgs', '3', '--seed', '42', '--events', '200', '--rate', '20',
    '--keep-roles', steady.map((u) => u.uid).join(',')], { stdio: ['ignore', 'ignore', 'pipe'] })
  let genErr = ''
  gen.stderr.on('data', (d) => { genErr += d })
  let running = true
  const exited = new Promise((resolve) => gen.on('exit', (code) => { running = false; resolve(code) }))
  // The owner's 48 h total as drawn, every 300 ms, from the generator's start until the pane
  // agrees with SQL: a chart that moves draws intermediate totals, one that froze or only
  // caught up at the end draws at most two.
  const seen = new Set()
  const seenWhileRunning = new Set()
  let sampling = true
  let shot = false
  const sampler = (async () => {
    while (sampling) {
      const ch = await chartsOf(page, 'left').catch(() => null)
      if (ch === null) break // the page is gone (the test failed elsewhere)
      if (ch.hoursState === 'ok') {
        seen.add(ch.total)
        if (running) seenWhileRunning.add(ch.total)
      }
      if (!shot && running && seenWhileRunning.size >= 2) {
        shot = true
        await page.screenshot({ path: path.join(SHOTS, 'charts-generator.png'), fullPage: false })
      }
      await new Promise((r) => setTimeout(r, 300))
    }
  })()
  const code = await exited
  const ended = Date.now()
  if (!shot) await page.screenshot({ path: path.join(SHOTS, 'charts-generator.png'), fullPage: false })
  check('the generator ran to its end', code === 0, genErr.split('\n').slice(-3).join(' | '))
  const after = sqlHours()
  const sum = (h) => Object.values(h).reduce((s, r) => s + r.calls + r.sms, 0)
  check('the generator changed the org\'s figures in SQL (a frozen chart cannot agree)', sum(after) !== sum(before), `${sum(before)} -> ${sum(after)}`)

  // Nothing writes now: the charts must come to equal SQL, drawn from requests that left after
  // the generator's last commit.
  for (const [side, who] of [['left', owner], ['right', viewer]]) {
    let diffs = ['no chart drawn after the generator stopped']
    const t0 = Date.now()
    const ok = await waitFor(async () => {
      const ch = await chartsOf(page, side)
      if (ch.hoursState !== 'ok' || ch.hoursFetched <= ended) return null
      diffs = hourDiffs(ch, after)
      return diffs.length === 0 ? ch : null
    }, 60000)
    check(`${who.name} pane: every hour's calls, SMS and missed calls equal SQL`, !!ok, diffs.slice(0, 4).join('; '))
    if (ok) console.log(`# ${who.name} pane agreed with SQL ${Date.now() - t0} ms after the generator stopped; 48 h: ${ok.total} calls+SMS`)
    if (side === 'left') {
      sampling = false
      await sampler
      console.log(`# owner's totals drawn while the generator wrote: ${[...seenWhileRunning].join(', ')}`)
      check('the charts move as the generator writes (3+ different totals drawn up to the final one)', seen.size >= 3,
        `totals drawn: ${[...seen].join(', ')}`)
    }
  }
  let cdiffs = ['no contacts chart drawn after the generator stopped']
  const contacts = await waitFor(async () => {
    const ch = await chartsOf(page, 'left')
    if (ch.contactsState !== 'ok' || ch.contactsFetched <= ended) return null
    cdiffs = contactDiffs(ch, owner.uid)
    return cdiffs.length === 0 ? ch : null
  }, 60000)
  check('owner pane: the top contacts equal SQL through RLS as the owner', !!contacts && contacts.contacts.length > 0, cdiffs.slice(0, 4).join('; '))
  const v = await chartsOf(page, 'right')
  check('viewer pane: top contacts "not visible to viewer" (403)', v.contactsState === 'refused' && v.contactsStatus === 403 && /not visible to viewer/.test(v.contactsText), v.contactsText)
  await page.screenshot({ path: path.join(SHOTS, 'charts-agree.png'), fullPage: false })

  // --keep-roles: the generator changed roles, but never the panes' users'
  const roles = JSON.parse(psql(`select coalesce(jsonb_object_agg(user_id, role), '{}') from public.org_roles
    where org_id = ${lit(cfg.org)} and user_id in (${steady.map((u) => lit(u.uid)).join(',')});`))
  check('the kept users still hold their roles', steady.every((u) => roles[u.uid] === u.role), JSON.stringify(roles))
  const changes = JSON.parse(psql(`select jsonb_build_object('kept', count(*) filter (where target_id in (${steady.map((u) => lit(u.uid)).join(',')})), 'all', count(*))
    from public.audit_log where action like 'role.%' and created_at >= ${lit(since)};`))
  check('the generator changed roles, none of the kept users\'', changes.all > 0 && changes.kept === 0, JSON.stringify(changes))
}

const browser = await chromium.launch({
  executablePath: process.env.WALCAST_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
})
fs.mkdirSync(SHOTS, { recursive: true })
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 900 } })
  page.on('pageerror', (e) => console.log(`# page error: ${e}`))
  await page.goto(`${URL}?left=analyst&right=viewer`)
  const subscribed = await waitFor(
    () => page.evaluate(() => ['left', 'right'].every((s) => document.getElementById(`pane-${s}`).dataset.status === 'SUBSCRIBED')),
    60000,
  )
  check('both panes subscribe through realtime-js', subscribed)
  check('the left pane is the analyst', (await page.getAttribute('#pane-left', 'data-uid')) === analyst.uid)
  check('the right pane is the viewer', (await page.getAttribute('#pane-right', 'data-uid')) === viewer.uid)

  // Known events in the demo org: one of them the viewer's own (its body is then the viewer's).
  const events = []
  for (let i = 0; i < 8; i++) {
    const id = crypto.randomUUID()
    const body = `demo test note ${i} ${id.slice(0, 8)}`
    const hex = execFileSync(process.env.WALCAST_BIN, ['encrypt'], { input: `${id}\t${body}\n`, encoding: 'utf8' }).trim()
    events.push({ id, body, hex, uid: i === 3 ? viewer.uid : owner.uid, from: `+1555010${1000 + i}`, to: `+1555020${2000 + i}` })
  }
  psql(events.map((e) => `insert into public.events (id, org_id, user_id, kind, direction, status, from_number, to_number, body)
values (${lit(e.id)}, ${lit(cfg.org)}, ${lit(e.uid)}, 'sms', 'outbound', 'delivered', ${lit(e.from)}, ${lit(e.to)}, ${lit(e.hex)}::bytea);`).join('\n'))

  // The pane's rows of our events: {id: row as delivered}
  const paneRows = (side) => page.evaluate((side) => {
    const out = {}
    for (const tr of document.querySelectorAll(`#feed-${side} tr.event`)) {
      const r = JSON.parse(tr.dataset.row)
      if (tr.dataset.action === 'INSERT') out[r.id] = r
    }
    return out
  }, side)
  const ids = events.map((e) => e.id)
  const all = async (side) => { const r = await paneRows(side); return ids.every((id) => id in r) ? r : null }
  const left = await waitFor(() => all('left'), 60000)
  const right = await waitFor(() => all('right'), 60000)
  check('the analyst pane shows all 8 events', !!left)
  check('the viewer pane shows all 8 events', !!right)
  await page.screenshot({ path: path.join(SHOTS, 'analyst-viewer.png'), fullPage: true })

  const inList = ids.map(lit).join(',')
  const q = `select id, from_number, to_number, body is not null as has_body from walcast.events_masked where id in (${inList})`
  const oracle = (uid) => Object.fromEntries(asUser(uid, q).map((r) => [r.id, r]))
  const vView = oracle(viewer.uid)
  const aView = oracle(analyst.uid)
  check('PostgreSQL shows the viewer all 8 events', Object.keys(vView).length === 8)
  check('PostgreSQL shows the analyst all 8 events', Object.keys(aView).length === 8)
  if (right) {
    let clear = 0
    for (const e of events) {
      const got = right[e.id]
      const want = vView[e.id]
      if (!want) continue
      check(`viewer ${e.id.slice(0, 8)}: from/to exactly as the masking view`, got.from_number === want.from_number && got.to_number === want.to_number,
        `page ${got.from_number}/${got.to_number}, view ${want.from_number}/${want.to_number}`)
      if (got.from_number === e.from || got.to_number === e.to) clear++
      if (want.has_body) check(`viewer ${e.id.slice(0, 8)}: the body it may see is decrypted`, got.body === e.body, `page ${got.body}`)
      else check(`viewer ${e.id.slice(0, 8)}: a hidden body is absent or null`, got.body === undefined || got.body === null, `page ${got.body}`)
    }
    check('the viewer never sees a number in clear (the view masks them)', clear === 0, `${clear} in clear`)
    check('the viewer sees exactly one body (its own event)', Object.values(vView).filter((r) => r.has_body).length === 1)
  }
  if (left) {
    for (const e of events) {
      const got = left[e.id]
      const want = aView[e.id]
      if (!want) continue
      check(`analyst ${e.id.slice(0, 8)}: numbers as the view`, got.from_number === want.from_number && got.to_number === want.to_number)
      check(`analyst ${e.id.slice(0, 8)}: the body decrypted`, want.has_body && got.body === e.body, `page ${got.body}`)
    }
  }
  // The contacts charts follow the API's verdict for each user: a list for the analyst, the
  // refusal drawn for the viewer (and the API does refuse it).
  const apiViewer = await statsAs(viewer.token, `contacts?day=${utcDay()}`)
  check('the stats API refuses the viewer top contacts (403)', apiViewer.status === 403, `status ${apiViewer.status}`)
  const charts0 = await waitFor(async () => {
    const l = await chartsOf(page, 'left')
    const r = await chartsOf(page, 'right')
    return l.contactsState === 'ok' && r.contactsState === 'refused' ? { l, r } : null
  }, 30000)
  check('the analyst pane draws its top contacts', !!charts0 && charts0.l.contactsStatus === 200)
  check('the viewer pane says "not visible to viewer" (the API\'s 403)', !!charts0 && charts0.r.contactsStatus === 403 &&
    /not visible to viewer/.test(charts0.r.contactsText), charts0 ? charts0.r.contactsText : 'no refusal drawn')
  check('the viewer pane still draws the org\'s hourly totals (every member reads them)', !!charts0 && charts0.r.hoursState === 'ok' && charts0.r.hours.length === 48)

  // A demotion reaches the analyst at its commit: the badge says so and the events committed
  // after it are masked as the view now masks them for that user.
  psql(`update public.org_roles set role = 'viewer' where org_id = ${lit(cfg.org)} and user_id = ${lit(analyst.uid)};`)
  const badge = await waitFor(async () => ((await page.textContent('#role-left')) === 'now viewer' ? true : null), 30000)
  check('the demotion reaches the analyst pane (badge "now viewer")', !!badge, await page.textContent('#role-left'))
  const refusedNow = await waitFor(async () => {
    const l = await chartsOf(page, 'left')
    return l.contactsState === 'refused' && /not visible to viewer/.test(l.contactsText) ? l : null
  }, 30000)
  const apiDemoted = await statsAs(analyst.token, `contacts?day=${utcDay()}`)
  check('the demoted analyst: the API refuses its top contacts (403)', apiDemoted.status === 403, `status ${apiDemoted.status}`)
  check('the demoted analyst pane\'s contacts chart says "not visible to viewer"', !!refusedNow && refusedNow.contactsStatus === 403,
    (await chartsOf(page, 'left')).contactsText)
  const after = []
  for (let i = 0; i < 2; i++) {
    const id = crypto.randomUUID()
    const body = `after demotion ${i}`
    const hex = execFileSync(process.env.WALCAST_BIN, ['encrypt'], { input: `${id}\t${body}\n`, encoding: 'utf8' }).trim()
    after.push({ id, body })
    psql(`insert into public.events (id, org_id, user_id, kind, direction, status, from_number, to_number, body)
values (${lit(id)}, ${lit(cfg.org)}, ${lit(owner.uid)}, 'call', 'inbound', 'completed', '+15550309${i}00', '+15550409${i}00', ${lit(hex)}::bytea);`)
  }
  const demoted = await waitFor(async () => { const r = await paneRows('left'); return after.every((e) => e.id in r) ? r : null }, 60000)
  check('the demoted analyst pane shows the events after the demotion', !!demoted)
  if (demoted) {
    const view = Object.fromEntries(asUser(analyst.uid, `select id, from_number, to_number, body is not null as has_body from walcast.events_masked where id in (${after.map((e) => lit(e.id)).join(',')})`).map((r) => [r.id, r]))
    for (const e of after) {
      const got = demoted[e.id]
      const want = view[e.id]
      check(`demoted ${e.id.slice(0, 8)}: numbers masked exactly as the view`, !!want && got.from_number === want.from_number && got.to_number === want.to_number,
        `page ${got.from_number}/${got.to_number}, view ${want && want.from_number}`)
      check(`demoted ${e.id.slice(0, 8)}: no body (the view hides it)`, !!want && !want.has_body && (got.body === undefined || got.body === null), `page ${got.body}`)
    }
  }
  await page.screenshot({ path: path.join(SHOTS, 'analyst-demoted.png'), fullPage: true })

  const health = await waitFor(async () => {
    const t = await page.textContent('#health')
    return /ready/.test(t) && /lag /.test(t) ? t : null
  }, 30000)
  check('the health line shows ready and the replication lag', !!health, await page.textContent('#health'))

  // the page as owner and viewer (the demo's default), for the record
  await page.goto(URL)
  await waitFor(() => page.evaluate(() => document.querySelectorAll('tr.event').length > 0), 30000)
  await page.screenshot({ path: path.join(SHOTS, 'owner-viewer.png'), fullPage: true })
  await chartsWhileTheGeneratorRuns(page)
} catch (e) {
  check('the browser test ran', false, e.stack || String(e))
} finally {
  await browser.close()
}
console.log(`${passed} passed, ${failed} failed`)
process.exit(failed === 0 && passed > 0 ? 0 : 1)
