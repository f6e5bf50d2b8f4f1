// audit.test.mjs — access is audited (issue 9, "Authentication and policy"; docs/protocol.md
// "Auditing"; docs/operations.md "What walcast writes to the database"). Runs against a daemon
// with `[audit] enabled = true` (realtime.sh starts one of its own).
//   - a user's join, refused join and leave (phx_leave, or the connection closed) each become one
//     audit_log row per org the user is a member of: actions realtime.join,
//     realtime.join_refused (detail reason: the error sent), realtime.leave; actor_id the user;
//     detail topic; joins of service_role (no user) are not audited;
//   - the rows come back through the WAL: an admin subscribed to audit_log through realtime-js
//     receives exactly the rows PostgreSQL shows that admin (walcast.audit_log_masked), and
//     nothing loops (the count stays put once the accesses stop).
import crypto from 'node:crypto'
import {
  Client, asUser, check, checkTrue, lit, rawConnect, rawJoin, serviceToken, sleep, sql, summary, syncStream, testCase, userToken, waitFor,
} from './lib.mjs'

const X = crypto.randomUUID()
const Y = crypto.randomUUID()
const admin = crypto.randomUUID()
const member = crypto.randomUUID()
sql(`insert into orgs (id, name) values (${lit(X)}, 'rt audit X'), (${lit(Y)}, 'rt audit Y');
     insert into org_roles (org_id, user_id, role) values (${lit(X)}, ${lit(admin)}, 'admin'), (${lit(X)}, ${lit(member)}, 'member'),
       (${lit(Y)}, ${lit(member)}, 'viewer')`)
// walcast audits a join in the orgs its policy state (the stream's position) says the user is a
// member of: the memberships must have streamed through before the first join
await syncStream()
const BIND = [{ event: '*', schema: 'public', table: 'events' }]
const rowsOf = (uid) => JSON.parse(sql(`select coalesce(jsonb_agg(t order by id), '[]') from (select id, org_id, actor_id, action, target_table, detail
  from audit_log where actor_id = ${lit(uid)} and action like 'realtime.%') t`))
const summarize = (rows) => rows.map((r) => `${r.action} ${r.org_id === X ? 'X' : r.org_id === Y ? 'Y' : r.org_id}`).sort()

await testCase('joins, refused joins and leaves become audit rows', async () => {
  const watcher = new Client('watcher', { token: userToken(admin) })
  const wch = await watcher.subscribe('audit-watch', [{ event: '*', schema: 'public', table: 'audit_log' }])

  const m = new Client('member', { token: userToken(member) })
  const ch = await m.subscribe('aud-events', BIND)
  checkTrue('join: one realtime.join row per org of the user', await waitFor(() => rowsOf(member).length >= 2, 30000))
  check('join rows', ['realtime.join X', 'realtime.join Y'], summarize(rowsOf(member)))
  checkTrue('join rows name the topic in detail', rowsOf(member).every((r) => String(r.detail?.topic || '').endsWith('aud-events')), JSON.stringify(rowsOf(member)))

  const raw = await rawConnect({ vsn: '2.0.0' })
  const refused = await rawJoin(raw, 'realtime:aud-refused', [{ event: '*', schema: 'public', table: 'events', filter: 'status=foo.hey' }], userToken(member))
  check('the bad join is refused', 'error', refused?.payload?.status)
  await waitFor(() => rowsOf(member).length >= 4, 30000)
  const ref = rowsOf(member).filter((r) => r.action === 'realtime.join_refused')
  check('refused join: one realtime.join_refused row per org', ['realtime.join_refused X', 'realtime.join_refused Y'], summarize(ref))
  checkTrue('  ... its detail reason is the error sent', ref.length > 0 && ref.every((r) => r.detail?.reason === refused?.payload?.response?.reason), JSON.stringify(ref.map((r) => r.detail)))
  raw.ws.close()

  await ch.unsubscribe()
  await waitFor(() => rowsOf(member).filter((r) => r.action === 'realtime.leave').length >= 2, 30000)
  check('phx_leave: one realtime.leave row per org', ['realtime.leave X', 'realtime.leave Y'], summarize(rowsOf(member).filter((r) => r.action === 'realtime.leave')))

  await m.subscribe('aud-second', BIND)
  m.close()
  await waitFor(() => rowsOf(member).filter((r) => r.action === 'realtime.leave').length >= 4, 30000)
  check('a join then a closed connection: a join and a leave per org',
    ['realtime.join X', 'realtime.join Y', 'realtime.leave X', 'realtime.leave Y'],
    summarize(rowsOf(member).filter((r) => String(r.detail?.topic || '').endsWith('aud-second'))))

  const before = Number(sql(`select count(*) from audit_log where action like 'realtime.%'`))
  const svc = new Client('service', { token: serviceToken() })
  await svc.subscribe('aud-service', BIND)
  svc.close()
  await sleep(2000)
  check('service_role joins and leaves are not audited (no user, no org)', 0,
    Number(sql(`select count(*) from audit_log where action like 'realtime.%' and detail->>'topic' like '%aud-service'`)))

  // the rows came back through the WAL to the admin, exactly as PostgreSQL shows them to the admin
  const want = async () => (await asUser({ uid: admin }, `select id from walcast.audit_log_masked where org_id = ${lit(X)} order by id`)).map((r) => Number(r.id))
  const got = () => wch.got[0].filter((p) => p.eventType === 'INSERT').map((p) => Number(p.new.id))
  await waitFor(async () => got().length >= (await want()).length, 30000)
  const w = await want()
  const seen = await asUser({ uid: admin }, `select action, actor_id from walcast.audit_log_masked where org_id = ${lit(X)}`)
  check('oracle: the admin sees the member\'s five rows of org X and its own join',
    ['realtime.join admin', 'realtime.join member', 'realtime.join member', 'realtime.join_refused member', 'realtime.leave member', 'realtime.leave member'],
    seen.map((r) => `${r.action} ${r.actor_id === admin ? 'admin' : r.actor_id === member ? 'member' : r.actor_id}`).sort())
  check('the admin received exactly the audit rows of org X that PostgreSQL shows the admin', w, got())
  // nothing loops: with no more accesses the rows stop
  const n1 = Number(sql(`select count(*) from audit_log where org_id in (${lit(X)}, ${lit(Y)})`))
  await sleep(3000)
  const n2 = Number(sql(`select count(*) from audit_log where org_id in (${lit(X)}, ${lit(Y)})`))
  check('nothing loops: no new audit rows once the accesses stop', n1, n2)
  checkTrue('oracle: the realtime rows were written', before > 0)
  watcher.close()
})
summary()
