// limits.test.mjs — the sink's configured limits (docs/protocol.md "Limits and misbehaving
// clients"), against a daemon of its own started by realtime.sh with max_connections = 20,
// max_channels = 3 and max_message_bytes = 4096:
//   - the 21st connection is refused with plain HTTP 429 and {"error": "Too many connected
//     users"}; once others close, connections are accepted again;
//   - a 4th channel on one connection is refused ("Too many channels"), the connection and its
//     three channels keep working; after a phx_leave a join succeeds again;
//   - a client message over max_message_bytes gets a system error and the connection is closed,
//     while a realtime-js client keeps receiving.
import crypto from 'node:crypto'
import {
  Client, check, checkTrue, healthz, lit, metric, rawConnect, rawJoin, sql, sqlAsync, summary, syncStream, testCase, userToken, waitFor,
} from './lib.mjs'

const org = crypto.randomUUID()
const member = crypto.randomUUID()
sql(`insert into orgs (id, name) values (${lit(org)}, 'rt limits');
     insert into org_roles (org_id, user_id, role) values (${lit(org)}, ${lit(member)}, 'member')`)
await syncStream()
const BIND = [{ event: '*', schema: 'public', table: 'events', filter: `org_id=eq.${org}` }]
const insertEvent = (status) => sqlAsync(`insert into events (org_id, kind, direction, status) values (${lit(org)}, 'call', 'inbound', ${lit(status)}) returning id`)

await testCase('max_connections', async () => {
  // the sync client's connection must be gone first (its close is asynchronous)
  checkTrue('no connection open before', await waitFor(async () => (await metric('walcast_realtime_connections')) === 0, 20000))
  const conns = []
  for (let i = 0; i < 20; i++) conns.push(await rawConnect({ vsn: '2.0.0' }))
  check('20 connections accepted', 20, conns.filter((c) => !c.refused && !c.error).length)
  const extra = await rawConnect({ vsn: '2.0.0' })
  check('the 21st: HTTP 429', 429, extra.refused?.status)
  let body = null
  try { body = JSON.parse(extra.refused?.body || 'null') } catch { body = extra.refused?.body }
  check('  ... with {"error": "Too many connected users"}', { error: 'Too many connected users' }, body)
  for (const c of conns.splice(0, 5)) c.ws.close()
  const again = await waitFor(async () => {
    const c = await rawConnect({ vsn: '2.0.0' })
    if (c.refused || c.error) return false
    conns.push(c)
    return true
  }, 20000)
  checkTrue('after five closed, a connection is accepted again', again)
  for (const c of conns) c.ws.terminate()
  await waitFor(async () => { const c = await rawConnect({ vsn: '2.0.0' }); const ok = !c.refused; if (c.ws) c.ws.terminate(); return ok }, 20000)
})

await testCase('max_channels', async () => {
  const c = await rawConnect({ vsn: '1.0.0' })
  const token = userToken(member)
  const replies = []
  for (let i = 0; i < 4; i++) replies.push(await rawJoin(c, `realtime:lim${i}`, BIND, token))
  check('three channels joined, the fourth refused', ['ok', 'ok', 'ok', 'error'], replies.map((r) => r?.payload?.status))
  checkTrue('  ... reason "...Too many channels"', /Too many channels/.test(replies[3]?.payload?.response?.reason || ''), JSON.stringify(replies[3]?.payload))
  const id = await insertEvent('three channels')
  checkTrue('the three channels receive', await waitFor(() => [0, 1, 2].every((i) => c.frames.some((f) => f.topic === `realtime:lim${i}` &&
    f.event === 'postgres_changes' && f.payload?.data?.record?.id === id)), 30000))
  const left = await c.push('realtime:lim0', 'phx_leave', {}, { joinRef: replies[0].join_ref })
  check('phx_leave answered ok', 'ok', left?.payload?.status)
  const rejoin = await rawJoin(c, 'realtime:lim3', BIND, token)
  check('after a leave, a join succeeds again', 'ok', rejoin?.payload?.status)
  c.ws.close()
})

await testCase('max_message_bytes', async () => {
  const witness = new Client('limits-witness', { token: userToken(member) })
  const wch = await witness.subscribe('limits-witness', BIND)
  const c = await rawConnect({ vsn: '2.0.0' })
  c.send(JSON.stringify([null, '1', 'phoenix', 'heartbeat', { pad: 'x'.repeat(5000) }]))
  const closed = await waitFor(() => c.closed, 20000)
  checkTrue('a 5 KB message over the 4 KB limit: the connection is closed', !!closed)
  checkTrue('  ... after a system error saying so', c.frames.some((f) => f.event === 'system' && f.payload?.status === 'error'), JSON.stringify(c.frames))
  const id = await insertEvent('after an oversized message')
  checkTrue('the witness keeps receiving', await waitFor(() => wch.got[0].some((p) => p.new.id === id), 30000))
  checkTrue('/healthz answers', await healthz())
  witness.close()
})
summary()
