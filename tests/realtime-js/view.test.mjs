// view.test.mjs — "A view that stays true" (issue 9; docs/protocol.md): the walcast extension a
// channel opts into with config.postgres_changes_options.walcast_view = "stay_true".
//
// Users of one org subscribe to its events through the unmodified realtime-js, each once with the
// opt-in and once without (two connections). Transactions then move rows out of some users' view:
// an event of a private contact reassigned away from the viewer who handled it, a public event
// moved to a private contact, an event moved to another org; and a member is demoted. The oracle
// is the database: the events each user may read through RLS, before and after each commit. A user
// who saw the row before the commit and does not after must receive, on the opted-in channel
// only, a DELETE whose old record carries the row's id; a user who still sees it gets the UPDATE
// (on both channels, as the server sends it); the demoted user's opted-in channel gets the
// `system` message {extension: "walcast_view", status: "ok"} and the other channel nothing of it.
import crypto from 'node:crypto'
import { Client, asUser, check, checkTrue, lit, note, sql, sqlAsync, summary, syncStream, testCase, userToken, waitFor } from './lib.mjs'

const uuid = () => crypto.randomUUID()
const A = uuid()
const B = uuid()
const U = { admin: uuid(), handler: uuid(), viewer: uuid(), demotee: uuid() }
const C = { pub: uuid(), priv: uuid() }
sql(`insert into orgs (id, name) values (${lit(A)}, 'rt view A'), (${lit(B)}, 'rt view B');
     insert into org_roles (org_id, user_id, role) values (${lit(A)}, ${lit(U.admin)}, 'admin'),
       (${lit(A)}, ${lit(U.handler)}, 'viewer'), (${lit(A)}, ${lit(U.viewer)}, 'viewer'), (${lit(A)}, ${lit(U.demotee)}, 'member');
     insert into contacts (id, org_id, name, phone) values (${lit(C.pub)}, ${lit(A)}, 'Public', '+15550001234'),
       (${lit(C.priv)}, ${lit(A)}, 'Private', '+15550009876');
     insert into privacy_rules (org_id, contact_id, min_role) values (${lit(A)}, ${lit(C.priv)}, 'admin')`)
const E = { reassigned: uuid(), hidden: uuid(), moved: uuid() }
sql(`insert into events (id, org_id, contact_id, user_id, kind, direction, status) values
       (${lit(E.reassigned)}, ${lit(A)}, ${lit(C.priv)}, ${lit(U.handler)}, 'call', 'inbound', 'new'),
       (${lit(E.hidden)}, ${lit(A)}, ${lit(C.pub)}, NULL, 'call', 'inbound', 'new'),
       (${lit(E.moved)}, ${lit(A)}, NULL, NULL, 'call', 'inbound', 'new')`)
await syncStream()

const BINDING = [{ event: '*', schema: 'public', table: 'events' }]
const NAMES = Object.keys(U)
const OPT = { config: { postgres_changes_options: { walcast_view: 'stay_true' } } }
const subs = {}
const clients = []
for (const [i, n] of NAMES.entries()) {
  const vsn = i % 2 ? '1.0.0' : '2.0.0'
  const on = new Client(`${n}-on`, { token: userToken(U[n]), vsn })
  const off = new Client(`${n}-off`, { token: userToken(U[n]), vsn })
  clients.push(on, off)
  subs[n] = {
    on: await on.subscribe(`view-${A}`, BINDING, OPT),
    off: await off.subscribe(`view-${A}`, BINDING),
  }
}

// The events of this test each user may read, per PostgreSQL.
const ids = Object.values(E)
async function visible() {
  const out = {}
  for (const n of NAMES) {
    const rows = await asUser({ uid: U[n] }, `select id from events where id in (${ids.map(lit).join(',')})`)
    out[n] = new Set(rows.map((r) => r.id))
  }
  return out
}

// One transaction; then, per user, what each channel must have received for event id.
async function step(label, id, text) {
  const before = await visible()
  const mark = Object.fromEntries(NAMES.map((n) => [n, { on: subs[n].on.got[0].length, off: subs[n].off.got[0].length }]))
  await sqlAsync(text)
  const after = await visible()
  // the sync point: a user who sees the event after the commit gets its UPDATE; wait for those,
  // and for the DELETEs due
  const due = (n) => (after[n].has(id) ? 'UPDATE' : before[n].has(id) ? 'DELETE' : null)
  const fresh = (n, k) => subs[n][k].got[0].slice(mark[n][k]).filter((p) => (p.new && p.new.id === id) || (p.old && p.old.id === id))
  await waitFor(() => NAMES.every((n) => !due(n) || fresh(n, 'on').length > 0), 30000)
  await syncStream() // anything else would have arrived by now
  for (const n of NAMES) {
    const want = due(n)
    check(`${label}: ${n} (opted in) gets ${want || 'nothing'}`, want ? [want] : [], fresh(n, 'on').map((p) => p.eventType))
    check(`${label}: ${n} (server's behaviour) gets ${want === 'UPDATE' ? 'UPDATE' : 'nothing'}`,
      want === 'UPDATE' ? ['UPDATE'] : [], fresh(n, 'off').map((p) => p.eventType))
    if (want === 'DELETE') {
      const p = fresh(n, 'on')[0]
      check(`${label}: ${n}'s DELETE carries the row's id in old_record`, id, p && p.old && p.old.id)
      check(`${label}: ${n}'s DELETE is of public.events`, 'public.events', p && `${p.schema}.${p.table}`)
    }
  }
  return { before, after }
}

await testCase('an UPDATE that moves a row out of a view', async () => {
  const r1 = await step('reassigned', E.reassigned, `update events set user_id = ${lit(U.admin)} where id = ${lit(E.reassigned)}`)
  checkTrue('reassigned: PostgreSQL showed the handler the row before and not after',
    r1.before.handler.has(E.reassigned) && !r1.after.handler.has(E.reassigned))
  const r2 = await step('private contact', E.hidden, `update events set contact_id = ${lit(C.priv)} where id = ${lit(E.hidden)}`)
  checkTrue('private contact: PostgreSQL showed the viewer the row before and not after',
    r2.before.viewer.has(E.hidden) && !r2.after.viewer.has(E.hidden))
  const r3 = await step('moved to another org', E.moved, `update events set org_id = ${lit(B)} where id = ${lit(E.moved)}`)
  checkTrue('moved: PostgreSQL showed the members of A the row before and nobody after',
    r3.before.viewer.has(E.moved) && NAMES.every((n) => !r3.after[n].has(E.moved)))
})

await testCase('a role change sends the opted-in channels a system message', async () => {
  const sys = (ch) => ch.frames().filter((f) => f.event === 'system' && f.payload && f.payload.extension === 'walcast_view')
  await sqlAsync(`update org_roles set role = 'viewer' where org_id = ${lit(A)} and user_id = ${lit(U.demotee)}`)
  const ok = await waitFor(() => sys(subs.demotee.on).length > 0, 30000)
  checkTrue('demotion: the demoted user\'s opted-in channel gets the walcast_view system message', ok)
  const m = sys(subs.demotee.on)[0]
  check('demotion: the message says the view changed', { status: 'ok', message: 'View changed: refetch' },
    m && { status: m.payload.status, message: m.payload.message })
  await syncStream()
  check('demotion: the channel without the opt-in gets no walcast_view message', 0, sys(subs.demotee.off).length)
  check('demotion: other users\' channels get none', [], NAMES.filter((n) => n !== 'demotee' && sys(subs[n].on).length > 0))
})

await testCase('a privacy-rule change sends the opted-in channels a system message', async () => {
  const sys = (ch) => ch.frames().filter((f) => f.event === 'system' && f.payload && f.payload.extension === 'walcast_view')
  const mark = Object.fromEntries(NAMES.map((n) => [n, { on: sys(subs[n].on).length, off: sys(subs[n].off).length }]))
  // the public contact becomes private: a viewer who read its events through RLS no longer does
  const e = uuid()
  sql(`insert into events (id, org_id, contact_id, kind, direction, status) values (${lit(e)}, ${lit(A)}, ${lit(C.pub)}, 'call', 'inbound', 'new')`)
  const before = await asUser({ uid: U.viewer }, `select id from events where id = ${lit(e)}`)
  await sqlAsync(`insert into privacy_rules (org_id, contact_id, min_role) values (${lit(A)}, ${lit(C.pub)}, 'admin')`)
  const after = await asUser({ uid: U.viewer }, `select id from events where id = ${lit(e)}`)
  checkTrue('rule: PostgreSQL showed the viewer the event before the rule and not after', before.length === 1 && after.length === 0)
  const ok = await waitFor(() => sys(subs.viewer.on).length > mark.viewer.on, 30000)
  checkTrue('rule: the viewer\'s opted-in channel gets the walcast_view system message', ok)
  await syncStream()
  check('rule: the message comes once for the transaction', 1, sys(subs.viewer.on).length - mark.viewer.on)
  check('rule: channels without the opt-in get none', [], NAMES.filter((n) => sys(subs[n].off).length > mark[n].off))
})

await testCase('a walcast_view other than "stay_true" is refused at join', async () => {
  const c = new Client('bad', { token: userToken(U.viewer) })
  clients.push(c)
  let err = null
  try {
    await c.subscribe(`view-bad-${A}`, BINDING, { config: { postgres_changes_options: { walcast_view: 'yes' } } })
  } catch (e) {
    err = String(e.message || e)
  }
  checkTrue('refused with a reason naming walcast_view', err !== null && /walcast_view/.test(err), err || 'joined')
})

for (const c of clients) c.close()
summary()
