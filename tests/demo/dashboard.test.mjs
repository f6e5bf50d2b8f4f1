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
//   - the health line shows "ready" and a replication lag from /metrics.
// Screenshots go to WALCAST_DEMO_SHOTS (a directory). Environment: WALCAST_DEMO_URL, PG*,
// WALCAST_BIN and WALCAST_KEYS_FILE (walcast encrypt), WALCAST_DEMO_USERS (users.json).
import { execFileSync } from 'node:child_process'
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

async function waitFor(cond, ms) {
  const end = Date.now() + ms * SLOW
  for (;;) {
    const v = await cond()
    if (v || Date.now() > end) return v
    await new Promise((r) => setTimeout(r, 250))
  }
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
  // A demotion reaches the analyst at its commit: the badge says so and the events committed
  // after it are masked as the view now masks them for that user.
  psql(`update public.org_roles set role = 'viewer' where org_id = ${lit(cfg.org)} and user_id = ${lit(analyst.uid)};`)
  const badge = await waitFor(async () => ((await page.textContent('#role-left')) === 'now viewer' ? true : null), 30000)
  check('the demotion reaches the analyst pane (badge "now viewer")', !!badge, await page.textContent('#role-left'))
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
} catch (e) {
  check('the browser test ran', false, e.stack || String(e))
} finally {
  await browser.close()
}
console.log(`${passed} passed, ${failed} failed`)
process.exit(failed === 0 && passed > 0 ? 0 : 1)
