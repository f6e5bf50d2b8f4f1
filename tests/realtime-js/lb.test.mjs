// lb.test.mjs — realtime-js through HAProxy in front of an active walcast and a standby (issue 12,
// "a load balancer in front"; docs/scaling.md). tests/integration/lb_haproxy.sh starts both
// instances and HAProxy with deploy/haproxy/walcast.cfg and runs this file with WALCAST_RT_HTTP
// pointing at HAProxy.
//
// Users of three orgs (an admin, a member who may not see a private contact's events and a
// viewer in one, a member in each of the others) subscribe through HAProxy. Each receives exactly
// the events PostgreSQL's masking view walcast.events_masked shows that user, and every connection
// lands on the active instance. Then, under a write load, the active instance is SIGKILLed:
// realtime-js reconnects and rejoins by itself through HAProxy with the last walcast_position it
// saw (a decode wrapper keeps it in the channel's join config, as docs/protocol.md shows). Each
// channel gets the walcast_resume answer: "Resumed" (then what it received equals the oracle
// exactly) or the gap (then it refetches as its user at once, and the refetch plus what it
// received equals the oracle). Nothing twice either way. Which answer a busy channel gets depends
// on how far the killed instance had checkpointed (the new one streams from there); the third
// org is quiet until the kill, so its member's position is older than the slot's confirmed
// position and its answer must be the gap, with rows of its org committed while it was away.
// Environment (lb_haproxy.sh): WALCAST_LB_HTTP_A, WALCAST_LB_HTTP_B (each instance directly),
// WALCAST_LB_STATS (HAProxy's status page), WALCAST_LB_PID_A (the active instance),
// WALCAST_LB_SLOT.
import { RESUME_GAP, check, checkTrue, diffRecord, dups, lit, metric, note, rawConnect, resumeAnswers, resumingClient, sleep, sql, sqlAsync, statusChanges, statusInserts, statusEvent, statusOracle, summary, syncStream, testCase, threeOrgs, userToken, waitFor } from './lib.mjs'

const HTTP_A = process.env.WALCAST_LB_HTTP_A
const HTTP_B = process.env.WALCAST_LB_HTTP_B
const STATS = process.env.WALCAST_LB_STATS
const PID_A = Number(process.env.WALCAST_LB_PID_A)
const SLOT = process.env.WALCAST_LB_SLOT

// memberZ's org is quiet before the kill (below)
const { U, BUSY, ALL } = threeOrgs('lb', { adminX: ['X', 'admin'], memberX: ['X', 'member'],
  viewerX: ['X', 'viewer'], memberY: ['Y', 'member'], memberZ: ['Z', 'member'] })
await syncStream()

// the n-th event of phase P (one per transaction), the targets in turn
const ev = (p, n, targets = ALL) => statusEvent('lb', p, n, targets)
// what PostgreSQL shows UID of phase P's events, in commit order
const oracle = (uid, p) => statusOracle(uid, `lb-${p}-`)

// ---- the clients ------------------------------------------------------------------------------
const BINDING = [{ event: '*', schema: 'public', table: 'events' }]
// lbClient: a realtime-js client through HAProxy that resumes from its last position
async function lbClient(name, uid) {
  return { name, uid, ...(await resumingClient(name, userToken(uid), `lb-${name}`, BINDING)) }
}
// the raw postgres_changes frames of phase P on a channel: {at, status, id, position}
const wire = (x, p) => statusChanges(x.c, x.ch, `lb-${p}-`)
// what realtime-js handed the application of phase P
const delivered = (x, p) => statusInserts(x.ch, `lb-${p}-`)
// the walcast_resume system frames of a channel, with their arrival time
const resumes = (x) => resumeAnswers(x.c, x.ch)
// HAProxy's view of the backend, a column of its CSV per server: status (17, UP/DOWN) or stot
// (7, the connections it has sent there in all): {walcast1: 'UP', walcast2: 'DOWN'}
async function lbStates(column = 17) {
  try {
    const csv = await (await fetch(`${STATS}/;csv`, { signal: AbortSignal.timeout(5000) })).text()
    return Object.fromEntries(csv.split('\n').map((l) => l.split(',')).filter((f) => f[0] === 'walcast' && /^walcast\d$/.test(f[1]))
      .map((f) => [f[1], f[column]]))
  } catch {
    return {}
  }
}

const clients = []
for (const [name, uid] of Object.entries(U)) clients.push(await lbClient(name, uid))

await testCase('through HAProxy: every connection on the active instance, each user its own rows', async () => {
  const onA = () => metric('walcast_realtime_connections', HTTP_A)
  const onB = () => metric('walcast_realtime_connections', HTTP_B)
  // six more connections that join nothing: leastconn must still send them all to the active one
  const extra = await Promise.all([1, 2, 3, 4, 5, 6].map(() => rawConnect()))
  check('the extra connections opened through HAProxy', 6, extra.filter((x) => x.ws && !x.refused).length)
  await waitFor(async () => (await onA()) === clients.length + 6, 20000)
  check('the active instance holds every connection (walcast_realtime_connections)', clients.length + 6, await onA())
  note(`the standby's walcast_realtime_connections: ${await onB()} (a standby runs no sink); HAProxy's connections ` +
    `in all: ${JSON.stringify(await lbStates(7))}`)
  check('HAProxy sent the standby no connection (stot)', '0', (await lbStates(7)).walcast2)
  for (const x of extra) x.ws.close()

  const N = 15
  for (let n = 0; n < N; n++) await sqlAsync(ev(1, n))
  const want = Object.fromEntries(await Promise.all(clients.map(async (x) => [x.name, await oracle(x.uid, 1)])))
  checkTrue('the oracle tells the users apart (admin, member, viewer, other org)',
    new Set(clients.map((x) => JSON.stringify(want[x.name]))).size === clients.length)
  await waitFor(() => clients.every((x) => delivered(x, 1).length >= want[x.name].length), 30000)
  await sleep(300) // anything beyond the oracle would arrive now
  for (const x of clients) {
    const got = delivered(x, 1)
    check(`${x.name}: exactly the rows RLS shows it, in commit order`, want[x.name].map((r) => r.status), got.map((q) => q.new.status))
    const diffs = got.flatMap((q) => {
      const w = want[x.name].find((r) => r.id === q.new.id)
      return w ? diffRecord(q.new, w).map((d) => `${q.new.status}: ${d}`) : []
    })
    check(`${x.name}: each record is the masking view's row`, [], diffs.slice(0, 5))
  }
})

await testCase('kill -9 of the active instance under load: failover through HAProxy', async () => {
  // The load: one event per transaction, until stopped; org Z gets events only after the kill.
  let stop = false
  let killed = false
  let n = 0
  const committed = [] // when each transaction of the load committed (ms)
  const load = (async () => {
    while (!stop) {
      const k = n++
      await sqlAsync(ev(2, k, killed ? ALL : BUSY))
      committed[k] = Date.now()
      await sleep(20)
    }
  })()
  const busy = clients.filter((x) => x.name !== 'memberZ')
  const quiet = clients.find((x) => x.name === 'memberZ')
  const received = (k) => busy.every((x) => wire(x, 2).length >= k)
  checkTrue('every client of a busy org receives the load before the kill', await waitFor(() => received(3), 30000))
  // memberZ's last position (its phase 1 event) is older than the slot's confirmed position:
  // the instance that takes over starts after it, so it cannot replay from there
  const zCommit = quiet.opts.walcast_resume_from.split(':')[0]
  const confirmedPast = () => sql(`select coalesce(confirmed_flush_lsn > ${lit(zCommit)}::pg_lsn, false)
    from pg_replication_slots where slot_name = ${lit(SLOT)}`) === 't'
  const tc = Date.now()
  checkTrue('the slot is confirmed past memberZ\'s last position (status_interval)', await waitFor(confirmedPast, 30000))
  note(`the slot was confirmed past memberZ's last position ${zCommit} after ${Date.now() - tc} ms`)
  const before = Object.fromEntries(clients.map((x) => [x.name, wire(x, 2).length]))
  const t0 = Date.now()
  process.kill(PID_A, 'SIGKILL')
  killed = true
  const nKill = n
  note(`the slot's confirmed position at the kill: ${sql(`select confirmed_flush_lsn from pg_replication_slots where slot_name = ${lit(SLOT)}`)}`)
  note(`killed the active instance (pid ${PID_A}) after ${n} transactions of the load`)

  // a gap answer is followed by a refetch as that user, at once (what an application does)
  const refetch = {}
  const answered = () => clients.every((x) => {
    const r = resumes(x).find((s) => s.at >= t0)
    if (r && r.status === 'error' && !refetch[x.name]) refetch[x.name] = { at: Date.now(), rows: oracle(x.uid, 2) }
    return r
  })
  let tUp = null
  const up = async () => {
    const s = await lbStates()
    if (!tUp && s.walcast2 === 'UP') tUp = Date.now()
    return tUp
  }
  const rejoined = await waitFor(async () => { await up(); return answered() }, 60000)
  checkTrue('every channel rejoined through HAProxy and got a walcast_resume answer', rejoined,
    clients.map((x) => `${x.name}: ${JSON.stringify(x.ch.statuses.slice(-3))}`).join('; '))
  await waitFor(up, 30000)
  checkTrue('HAProxy marked the standby up', tUp !== null, JSON.stringify(await lbStates()))
  // frames A had sent before it died may still arrive after the kill (socket buffers): what
  // comes after the channel's new join reply comes from the new active instance
  const joinedAt = (x) => (x.c.raw.filter((r) => r.text !== null && r.at >= t0).map((r) => ({ at: r.at, f: JSON.parse(r.text) }))
    .find(({ f }) => f[2] === x.ch.topic && f[3] === 'phx_reply' && f[4].status === 'ok') || { at: Infinity }).at

  // live changes after the rejoin, then the load stops
  const answerAt = (x) => (resumes(x).find((s) => s.at >= t0) || { at: Infinity }).at
  const after = (x) => wire(x, 2).filter((w) => w.at > answerAt(x)).length
  checkTrue('changes committed after the rejoin arrive live', await waitFor(() => clients.every((x) => after(x) >= 3), 30000))
  const firstAt = Math.min(...clients.map((x) => (wire(x, 2).find((w) => w.at >= joinedAt(x)) || { at: Infinity }).at))
  const rejoinAt = clients.map((x) => joinedAt(x) - t0)
  checkTrue(`HAProxy marked the standby up within 11.5 s of the kill (walcast's 10 s takeover bar, then two checks)`, tUp - t0 <= 11500, tUp - t0)
  checkTrue(`the first change arrived within 10 s after that (realtime-js's longest reconnect step)`, firstAt - tUp <= 10000, firstAt - t0)
  note(`kill -9 → HAProxy marks walcast2 UP: ${tUp - t0} ms; → each channel's join answered again: ${rejoinAt.join(', ')} ms; ` +
    `→ first change received through HAProxy: ${firstAt - t0} ms`)
  console.log(`# failover_ms up=${tUp - t0} first_change=${firstAt - t0} rejoin_max=${Math.max(...rejoinAt)}`)
  stop = true
  await load
  note(`the load committed ${n} transactions`)
  check('HAProxy: walcast1 DOWN, walcast2 UP', { walcast1: 'DOWN', walcast2: 'UP' }, await lbStates())
  await waitFor(async () => (await metric('walcast_realtime_connections', HTTP_B)) === clients.length, 20000)
  check('the new active instance holds every client', clients.length, await metric('walcast_realtime_connections', HTTP_B))

  for (const x of clients) {
    const want = (await oracle(x.uid, 2)).map((r) => r.status)
    const r = resumes(x).find((s) => s.at >= t0)
    const gap = r && r.status === 'error'
    const fetched = gap ? (await refetch[x.name].rows).map((row) => row.status) : []
    const cover = () => new Set([...wire(x, 2).map((w) => w.status), ...fetched])
    await waitFor(() => want.every((s) => cover().has(s)), 30000)
    await sleep(200)
    const got = wire(x, 2).map((w) => w.status)
    const missed = want.filter((s) => !got.includes(s))
    // the user's transactions committed after the kill and before its resume answer
    const dark = want.filter((s) => { const k = Number(s.split('-')[2]); return k >= nKill && committed[k] < answerAt(x) })
    note(`${x.name}: ${before[x.name]} received before the kill; answer "${r && r.message}"; ${dark.length} of its rows ` +
      `committed while it was away; ${got.length} received in all, ${missed.length} of the oracle's ${want.length} not received` +
      (gap ? `, ${fetched.length} refetched` : ''))
    checkTrue(`${x.name}: the answer is "Resumed: N changes replayed" or the documented gap`,
      r && ((r.status === 'ok' && /^Resumed: \d+ changes replayed$/.test(r.message)) ||
        (r.status === 'error' && r.message === RESUME_GAP)),
      JSON.stringify(r))
    check(`${x.name}: nothing received twice`, [], dups(got))
    check(`${x.name}: received in commit order`, [...got].sort(), got)
    check(`${x.name}: nothing beyond what RLS shows it`, [], got.filter((s) => !want.includes(s)))
    if (x === quiet) {
      check('memberZ (its position older than the slot\'s confirmed one): the gap answer', 'error', r && r.status)
      checkTrue('memberZ: rows of its org were committed while it was away (the gap is real)', dark.length > 0, dark.length)
      checkTrue('memberZ: it did not receive some of them (they come from the refetch)', dark.some((s) => !got.includes(s)))
    }
    if (gap) {
      check(`${x.name}: (gap) the refetch and what it received make the oracle`, want, [...cover()].sort())
      checkTrue(`${x.name}: (gap) the changes it did not receive are in the refetch`, missed.every((s) => fetched.includes(s)), missed.join(' '))
    } else {
      check(`${x.name}: (resumed) what it received is the oracle, nothing missed`, want, got)
    }
    check(`${x.name}: realtime-js handed the application the same changes`, got, delivered(x, 2).map((q) => q.new.status))
  }
})

for (const x of clients) x.c.close()
summary()
