// subscribed.test.mjs — no change is lost right after SUBSCRIBED (realtime-js#525; issue 9:
// "every change committed after the client received it reaches the client").
//
// 50 realtime-js clients (members of one org, both serializers alternately) subscribe at once to
// the org's events; each one commits an event of its own the moment its channel reports
// SUBSCRIBED (realtime-js's callback: before the "Subscribed to PostgreSQL" system message when
// the server sends it later). A client must then receive every event whose transaction began
// after its own SUBSCRIBED, its own included. The oracle is the database: the events committed,
// read back as the client's user through RLS, with the time each transaction started. A second
// round does the same with the stricter-for-the-server trigger removed: writes start when the
// system message arrives, which the issue states as the contract.
import crypto from 'node:crypto'
import { Client, asUser, check, checkTrue, lit, note, sql, sqlAsync, summary, syncStream, testCase, userToken, waitFor } from './lib.mjs'

const N = Number(process.env.WALCAST_RT_CLIENTS || 50)
const org = crypto.randomUUID()
const users = Array.from({ length: N }, () => crypto.randomUUID())
sql(`insert into orgs (id, name) values (${lit(org)}, 'rt subscribed');
     insert into org_roles (org_id, user_id, role) select ${lit(org)}, u::uuid, 'member' from unnest(array[${users.map(lit).join(',')}]) u`)
await syncStream()

async function round(label, waitSystem) {
  const writes = [] // {status, startedAt, committedAt}
  const clients = users.map((u, i) => new Client(`${label}${i}`, { token: userToken(u), vsn: i % 2 ? '1.0.0' : '2.0.0' }))
  const onReady = (i) => async (ch) => {
    const status = `${label}-${i}`
    const w = { status, startedAt: Date.now() }
    writes.push(w)
    ch.readyAt = w.startedAt
    await sqlAsync(`insert into events (org_id, kind, direction, status) values (${lit(org)}, 'call', 'inbound', ${lit(status)})`)
    w.committedAt = Date.now()
  }
  const chans = await Promise.all(clients.map((c, i) => c.subscribe(`subscribed-${label}`,
    [{ event: 'INSERT', schema: 'public', table: 'events', filter: `org_id=eq.${org}` }],
    {
      waitSystem,
      onSubscribed: waitSystem ? null : onReady(i),
    }).then(async (ch) => {
    if (waitSystem) await onReady(i)(ch)
    return ch
  }).catch((e) => ({ error: String(e.message || e) }))))
  const failedJoins = chans.filter((c) => c.error).map((c) => c.error)
  check(`${label}: all ${N} clients subscribed`, [], failedJoins.slice(0, 3))
  await waitFor(() => writes.length === N && writes.every((w) => w.committedAt), 60000)
  // the oracle: each member sees every event of the round through RLS
  const visible = await asUser({ uid: users[0] }, `select status from events where org_id = ${lit(org)} and status like ${lit(label + '-%')}`)
  check(`${label}: PostgreSQL shows a member all ${N} events`, N, visible.length)
  const due = (ch) => writes.filter((w) => w.startedAt >= ch.readyAt).map((w) => w.status)
  const got = (ch) => new Set(ch.got[0].map((p) => p.new.status))
  const complete = () => chans.every((ch) => ch.error || due(ch).every((s) => got(ch).has(s)))
  const ok = await waitFor(complete, 60000)
  const missing = chans.filter((ch) => !ch.error).flatMap((ch) => due(ch).filter((s) => !got(ch).has(s)).map((s) => `${ch.client.name} missed ${s}`))
  checkTrue(`${label}: every client received every event committed after its ${waitSystem ? 'system message' : 'SUBSCRIBED'} (its own included)`, ok && missing.length === 0, missing.slice(0, 5).join(', '))
  check(`${label}: every client received its own event`, [], chans.filter((ch, i) => !ch.error && !got(ch).has(`${label}-${i}`)).map((ch) => ch.client.name).slice(0, 5))
  const dueTotal = chans.reduce((n, ch) => n + (ch.error ? 0 : due(ch).length), 0)
  note(`${label}: ${dueTotal} (client, event) pairs due after subscription, ${N * N} in all`)
  check(`${label}: nothing twice`, [], chans.filter((ch) => !ch.error && ch.got[0].length !== got(ch).size).map((ch) => ch.client.name).slice(0, 5))
  check(`${label}: every client also got "Subscribed to PostgreSQL"`, [], chans.filter((ch) => !ch.error && !ch.subscribedSystem()).map((ch) => ch.client.name).slice(0, 5))
  for (const c of clients) c.close()
}

await testCase('writes at the system message', () => round('sys', true))
await testCase('writes at SUBSCRIBED', () => round('sub', false))
summary()
