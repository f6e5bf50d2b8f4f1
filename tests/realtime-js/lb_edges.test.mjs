// lb_edges.test.mjs — realtime-js through HAProxy in front of stateless edges, edges added and
// removed under a write load (issue 12; docs/scaling.md, "Edges behind HAProxy").
// tests/integration/lb_edges.sh starts the active instance, edges A and B and HAProxy with
// deploy/haproxy/walcast-edges.cfg (edge1 = A, edge2 = B, edge3 = C's address, C not started);
// this file starts C and D itself.
//
// Users of three orgs (an admin, a member who may not see a private contact's events and a viewer
// in X, a member in Y, a member and a viewer in Z) hold two clients each, all through HAProxy:
// leastconn puts one on A and one on B (their edge is read from walcast_realtime_connections as
// each connects). Each receives exactly the events PostgreSQL's masking view
// walcast.events_masked shows its user. Then a write load runs (one event per transaction; org Z
// gets none until B dies, so its clients' last positions are older than C's and D's starts):
//   1. edge C is started: HAProxy's checks bring edge3 in once C's /readyz is 200 (never
//      before); two new clients land on C;
//   2. edge D, in no file, is added with `walcast-lb-edge add edge4` before it is even started:
//      the server stays out of rotation until a check of D's /readyz passed; two new clients
//      land on D;
//   3. `walcast-lb-edge remove edge1` drains A in HAProxy, A gets SIGTERM and drains; its
//      clients reconnect through HAProxy and rejoin with their last walcast_position; the server
//      is deleted once its connections are gone;
//   4. edge B gets kill -9; its clients do the same and land on C or D (the only edges left),
//      which started after the Z clients' positions were committed: every channel must get
//      "Resumed: N changes replayed" (step 4 of docs/edges.md: a starting edge fills its replay
//      buffer from the Redis stream's window), the rows of Z committed while they were away
//      included.
// The oracle for every client: the rows the masking view shows its user, in commit order, nothing
// missed, nothing twice (after a gap answer: what it received plus a refetch as its user, made at
// once). Resumes and gaps are counted, and the times from each edge's end to its clients' answers
// printed (# lb_edges_ms ...).
// Environment (lb_edges.sh): WALCAST_LBE_HTTP_A..D (each edge directly), WALCAST_LB_STATS
// (HAProxy's status page), WALCAST_LBE_PID_A, WALCAST_LBE_PID_B, WALCAST_LBEDGE (the helper),
// WALCAST_LB_SOCKET, WALCAST_LBE_EDGE_ARGS (how to run an edge), WALCAST_LBE_WORK.
import { execFile, spawn } from 'node:child_process'
import fs from 'node:fs'
import { promisify } from 'node:util'
import { RESUME_GAP, check, checkTrue, diffRecord, dups, lit, metric, note, resumeAnswers, resumingClient, sleep, sql, sqlAsync, statusChanges, statusInserts, statusEvent, statusOracle, summary, syncStream, testCase, threeOrgs, userToken, waitFor } from './lib.mjs'

const execFileP = promisify(execFile)
const E = { A: process.env.WALCAST_LBE_HTTP_A, B: process.env.WALCAST_LBE_HTTP_B, C: process.env.WALCAST_LBE_HTTP_C, D: process.env.WALCAST_LBE_HTTP_D }
const STATS = process.env.WALCAST_LB_STATS
const WORK = process.env.WALCAST_LBE_WORK
const LBEDGE = process.env.WALCAST_LBEDGE

const { Z, CZ, U, BUSY, ALL } = threeOrgs('lbe', { adminX: ['X', 'admin'], memberX: ['X', 'member'], viewerX: ['X', 'viewer'],
  memberY: ['Y', 'member'], memberZ: ['Z', 'member'], viewerZ: ['Z', 'viewer'] })
const QUIET = ['memberZ', 'viewerZ'] // org Z: no events between phase 1 and B's kill
const ZMIX = BUSY.flatMap((t) => [t, [Z, CZ]]) // after B's kill: every other event in Z
await syncStream()

// the n-th event of phase P (one per transaction), the targets in turn
const ev = (p, n, targets = ALL) => statusEvent('lbe', p, n, targets)
// what PostgreSQL shows UID of phase P's events, in commit order
const oracle = (uid, p) => statusOracle(uid, `lbe-${p}-`)
const seq = (status) => Number(status.split('-')[2])

// ---- HAProxy and the edges ----------------------------------------------------------------------
// the walcast_edges servers in HAProxy's CSV, one column each: status (17) or stot (7, sessions
// sent there in all): {edge1: 'UP', ...}
async function lbStates(column = 17) {
  try {
    const csv = await (await fetch(`${STATS}/;csv`, { signal: AbortSignal.timeout(5000) })).text()
    return Object.fromEntries(csv.split('\n').map((l) => l.split(',')).filter((f) => f[0] === 'walcast_edges' && /^edge\d$/.test(f[1]))
      .map((f) => [f[1], f[column]]))
  } catch {
    return {}
  }
}
async function readyz(base) {
  try {
    return (await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(3000) })).status
  } catch {
    return 0
  }
}
const conns = async (e) => (await metric('walcast_realtime_connections', E[e])) || 0
// startEdge NAME: `walcast run` as an edge on E[NAME]'s port (lb_edges.sh's edge.conf), its stderr
// in WORK/edgeNAME.err, its pid in WORK/edgeNAME.pid; returns {child, exited (a promise of the
// exit code)}
function startEdge(name) {
  const port = new URL(E[name]).port
  const args = [...process.env.WALCAST_LBE_EDGE_ARGS.split(' '), '--set', `http.listen=127.0.0.1:${port}`,
    '--set', `pipeline.state_dir=${WORK}/edge${name}-state`]
  const err = fs.openSync(`${WORK}/edge${name}.err`, 'a')
  const child = spawn(process.env.WALCAST_BIN, args, { stdio: ['ignore', 'ignore', err] })
  fs.writeFileSync(`${WORK}/edge${name}.pid`, String(child.pid))
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve(code === null ? signal : code)))
  return { child, exited }
}
// watchIn SERVER EDGE START: runs START (which starts the edge, and for a runtime server adds it)
// and samples HAProxy's state of SERVER and EDGE's /readyz every 50 ms until SERVER is UP;
// resolves {tReady (first /readyz 200), tUp, early (samples UP while /readyz was not 200),
// started (what START resolved)}, times in ms from the start
async function watchIn(server, edge, start) {
  const t0 = Date.now()
  const r = { tReady: null, tUp: null, early: [] }
  const started = start()
  await waitFor(async () => {
    const code = await readyz(E[edge])
    const s = (await lbStates())[server]
    if (code === 200 && r.tReady === null) r.tReady = Date.now() - t0
    if (s === 'UP' && code !== 200) r.early.push(`${Date.now() - t0} ms: ${s}, /readyz ${code}`)
    if (s === 'UP' && r.tUp === null) r.tUp = Date.now() - t0
    return r.tUp !== null
  }, 60000)
  r.started = await started
  return r
}
// the position an edge's stream started from (its log: edge.start ... resume=LSN)
const edgeStart = (name) => (/edge\.start .* resume=([0-9A-F]+\/[0-9A-F]+)/.exec(fs.readFileSync(`${WORK}/edge${name}.err`, 'utf8')) || [])[1]
// runs walcast-lb-edge ARGS...: {rc, out}
const lbEdge = (...args) => execFileP(LBEDGE, args, { env: { ...process.env, WALCAST_LB_WAIT: '60' } })
  .then((r) => ({ rc: 0, out: r.stdout + r.stderr }), (e) => ({ rc: e.code, out: `${e.stdout}${e.stderr}` }))

// ---- the clients ------------------------------------------------------------------------------
const BINDING = [{ event: '*', schema: 'public', table: 'events' }]
// lbClient: a realtime-js client through HAProxy that resumes from its last position; .edge is
// the edge it landed on (the one of EDGES whose walcast_realtime_connections grew)
async function lbClient(name, user, edges) {
  const before = Object.fromEntries(await Promise.all(edges.map(async (e) => [e, await conns(e)])))
  const r = await resumingClient(name, userToken(U[user]), `lbe-${name}`, BINDING)
  let edge = null
  await waitFor(async () => {
    const grown = []
    for (const e of edges) if ((await conns(e)) > before[e]) grown.push(e)
    edge = grown.length === 1 ? grown[0] : null
    return edge
  }, 10000)
  return { name, user, uid: U[user], edge, subscribedAt: r.ch.subscribedAt, ...r }
}
// the postgres_changes frames of phase P on a channel: {at, status, record, ...}
const wire = (x, p) => statusChanges(x.c, x.ch, `lbe-${p}-`)
const delivered = (x, p) => statusInserts(x.ch, `lbe-${p}-`)
const resumes = (x) => resumeAnswers(x.c, x.ch)
const median = (l) => [...l].sort((a, b) => a - b)[Math.floor(l.length / 2)]

// the sync point's client gone, so that leastconn starts from two empty edges
await waitFor(async () => (await conns('A')) + (await conns('B')) === 0, 10000)
const clients = []
for (const user of Object.keys(U)) for (const i of [1, 2]) clients.push(await lbClient(`${user}.${i}`, user, ['A', 'B']))

await testCase('through HAProxy: leastconn spreads the clients over A and B, each user its own rows', async () => {
  check('each user has one client on A and one on B', Object.keys(U).map((u) => `${u}:A,B`),
    Object.keys(U).map((u) => `${u}:${clients.filter((x) => x.user === u).map((x) => x.edge).sort().join(',')}`))
  check('walcast_realtime_connections on A and B', [6, 6], [await conns('A'), await conns('B')])
  const N = 18
  for (let n = 0; n < N; n++) await sqlAsync(ev(1, n))
  const want = Object.fromEntries(await Promise.all(Object.keys(U).map(async (u) => [u, await oracle(U[u], 1)])))
  checkTrue('the oracle tells the users apart (admin, member, viewer, other orgs)', new Set(Object.values(want).map((w) => JSON.stringify(w))).size === 6)
  await waitFor(() => clients.every((x) => wire(x, 1).length >= want[x.user].length), 30000)
  await sleep(300) // anything beyond the oracle would arrive now
  for (const x of clients) {
    const got = wire(x, 1)
    check(`${x.name} (edge ${x.edge}): exactly the rows RLS shows it, in commit order`, want[x.user].map((r) => r.status), got.map((w) => w.status))
    const diffs = got.flatMap((w) => {
      const r = want[x.user].find((o) => o.id === w.record.id)
      return r ? diffRecord(w.record, r).map((d) => `${w.status}: ${d}`) : []
    })
    check(`${x.name}: each record is the masking view's row`, [], diffs.slice(0, 5))
  }
})

await testCase('edges added and removed under load, clients resumed through HAProxy', async () => {
  // the load: one event per transaction until stopped; org Z only once B is dead
  let stop = false
  let zOn = false
  let n = 0
  const sent = [] // when each transaction of the load was sent (ms)
  const committed = [] // when each was known committed (ms)
  const load = (async () => {
    while (!stop) {
      const k = n++
      sent[k] = Date.now()
      await sqlAsync(ev(2, k, zOn ? ZMIX : BUSY))
      committed[k] = Date.now()
      await sleep(20)
    }
  })()
  const busy = clients.filter((x) => !QUIET.includes(x.user))
  checkTrue('every client of a busy org receives the load', await waitFor(() => busy.every((x) => wire(x, 2).length >= 3), 30000))

  // 1. edge C, edge3 of the file: HAProxy's checks bring it in
  // the WAL's end when C and D start: the quiet clients' positions are older
  const walAt = {}
  const walNow = () => sql('select pg_current_wal_lsn()')
  let C = null
  const inC = await watchIn('edge3', 'C', async () => {
    walAt.C = walNow()
    C = startEdge('C')
  })
  note(`edge C: /readyz 200 after ${inC.tReady} ms, HAProxy marked edge3 UP after ${inC.tUp} ms`)
  check('edge C: HAProxy never had edge3 UP before its /readyz was 200', [], inC.early)
  checkTrue('edge C: HAProxy marked edge3 UP within 3 s of its /readyz 200', inC.tUp !== null && inC.tUp - inC.tReady <= 3000, JSON.stringify(inC))
  const onC = [await lbClient('late.adminX.C', 'adminX', ['A', 'B', 'C']), await lbClient('late.memberY.C', 'memberY', ['A', 'B', 'C'])]
  check('two new clients land on C (leastconn; walcast_realtime_connections)', ['C', 'C', 2], [...onC.map((x) => x.edge), await conns('C')])

  // 2. edge D, in no file: walcast-lb-edge add, run before D is even started
  let D = null
  const inD = await watchIn('edge4', 'D', async () => {
    const add = lbEdge('add', 'edge4', new URL(E.D).host)
    await sleep(1500) // the server exists and is checked, the edge not started yet
    note(`edge4 1.5 s after walcast-lb-edge add, D not started: ${(await lbStates()).edge4}`)
    walAt.D = walNow()
    D = startEdge('D')
    return add
  })
  note(`edge D (started 1.5 s after the add): /readyz 200 after ${inD.tReady} ms, HAProxy put edge4 in rotation after ${inD.tUp} ms`)
  check('walcast-lb-edge add: exit 0', [0, `walcast-lb-edge: edge4 (${new URL(E.D).host}) is in rotation`], [inD.started.rc, inD.started.out.trim()])
  check('edge D: edge4 was not in rotation before D\'s /readyz was 200', [], inD.early)
  const onD = [await lbClient('late.memberX.D', 'memberX', ['A', 'B', 'C', 'D']), await lbClient('late.viewerX.D', 'viewerX', ['A', 'B', 'C', 'D'])]
  check('two new clients land on D (leastconn; walcast_realtime_connections)', ['D', 'D', 2], [...onD.map((x) => x.edge), await conns('D')])
  const late = [...onC, ...onD]
  const all = [...clients, ...late]
  note(`C started at the WAL position ${walAt.C} (its stream read from ${edgeStart('C')}), D at ${walAt.D} (from ${edgeStart('D')})`)

  // a gap answer is followed by a refetch as that user, at once (what an application does)
  const refetch = {}
  const answer = (x, t) => {
    const r = resumes(x).find((s) => s.at >= t)
    if (r && r.status === 'error' && !refetch[`${x.name}@${t}`]) refetch[`${x.name}@${t}`] = oracle(x.uid, 2)
    return r
  }
  const answeredAll = (list, t) => list.every((x) => answer(x, t))
  const times = {}

  // 3. A removed gracefully: out of rotation, SIGTERM, the server deleted once its connections end
  const onA = clients.filter((x) => x.edge === 'A')
  const remove = lbEdge('remove', 'edge1')
  await waitFor(async () => (await lbStates()).edge1 === 'DRAIN', 10000)
  const tA = Date.now()
  process.kill(Number(process.env.WALCAST_LBE_PID_A), 'SIGTERM')
  note(`SIGTERM to edge A after ${n} transactions of the load`)
  checkTrue('every channel of A rejoined through HAProxy and got a walcast_resume answer', await waitFor(() => answeredAll(onA, tA), 60000),
    onA.map((x) => `${x.name}: ${JSON.stringify(x.ch.statuses.slice(-3))}`).join('; '))
  times.A = onA.map((x) => (answer(x, tA) || { at: NaN }).at - tA)
  const removed = await remove
  check('walcast-lb-edge remove edge1: exit 0 once A\'s connections ended', [0, 'walcast-lb-edge: edge1 removed'], [removed.rc, removed.out.trim()])
  check('HAProxy: edge1 deleted', undefined, (await lbStates()).edge1)

  // 4. B killed: its clients land on C or D, which started after the quiet clients' positions
  const nSock = Object.fromEntries(all.map((x) => [x.name, x.c.sockets.length]))
  const posAtB = Object.fromEntries(all.map((x) => [x.name, x.opts.walcast_resume_from || '0/0:0/0']))
  const tB = Date.now()
  process.kill(Number(process.env.WALCAST_LBE_PID_B), 'SIGKILL')
  zOn = true
  const nKill = n
  note(`kill -9 of edge B after ${n} transactions of the load`)
  const movedB = () => all.filter((x) => x.c.sockets.length > nSock[x.name])
  await waitFor(() => movedB().length > 0 && answeredAll(movedB(), tB), 60000)
  await sleep(500) // a client of B that had not reconnected yet
  const onB = movedB()
  checkTrue('every channel of B rejoined through HAProxy and got a walcast_resume answer', await waitFor(() => answeredAll(onB, tB), 60000),
    onB.map((x) => `${x.name}: ${JSON.stringify(x.ch.statuses.slice(-3))}`).join('; '))
  check('the clients that moved off B include B\'s own six', clients.filter((x) => x.edge === 'B').map((x) => x.name),
    onB.filter((x) => x.edge === 'B').map((x) => x.name))
  checkTrue('no client of C or D reconnected', late.every((x) => x.c.sockets.length === 1), late.map((x) => `${x.name}: ${x.c.sockets.length}`).join(' '))
  times.B = onB.map((x) => (answer(x, tB) || { at: NaN }).at - tB)

  // live changes after the rejoins, then the load stops
  const answerAt = (x) => Math.max(0, ...[tA, tB].map((t) => (resumes(x).find((s) => s.at >= t) || { at: 0 }).at))
  checkTrue('changes committed after the rejoins arrive live',
    await waitFor(() => all.every((x) => wire(x, 2).filter((w) => w.at > answerAt(x)).length >= 2), 30000))
  stop = true
  await load
  note(`the load committed ${n} transactions`)
  for (const [e, t] of Object.entries(times)) {
    note(`edge ${e} (${e === 'A' ? 'SIGTERM' : 'kill -9'}) → its ${t.length} channels' resume answers: ${t.join(', ')} ms`)
    console.log(`# lb_edges_ms edge=${e} min=${Math.min(...t)} median=${median(t)} max=${Math.max(...t)}`)
  }
  check('HAProxy: edge2 (B) DOWN, edge3 (C) and edge4 (D) UP', { edge2: 'DOWN', edge3: 'UP', edge4: 'UP' }, await lbStates())
  await waitFor(async () => (await conns('C')) + (await conns('D')) === all.length, 20000)
  check('C and D hold every client', all.length, (await conns('C')) + (await conns('D')))

  // the oracle, client by client
  let resumed = 0
  let gaps = 0
  const quietOnB = onB.filter((x) => QUIET.includes(x.user))
  for (const x of all) {
    const want = (await oracle(x.uid, 2)).map((r) => r.status)
    // a client that joined under load must receive what was sent after its join, and may receive
    // what was committed before it
    const must = late.includes(x) ? want.filter((s) => sent[seq(s)] > x.subscribedAt) : want
    const answers = [tA, tB].map((t) => ({ t, r: resumes(x).find((s) => s.at >= t && (t === tB || s.at < tB)) })).filter((a) => a.r)
    const fetched = (await Promise.all(answers.filter((a) => a.r.status === 'error').map((a) => refetch[`${x.name}@${a.t}`])))
      .flatMap((rows) => rows.map((r) => r.status))
    const cover = () => new Set([...wire(x, 2).map((w) => w.status), ...fetched])
    await waitFor(() => must.every((s) => cover().has(s)), 30000)
    await sleep(100)
    const got = wire(x, 2).map((w) => w.status)
    for (const a of answers) {
      if (a.r.status === 'ok' && /^Resumed: \d+ changes replayed$/.test(a.r.message)) resumed++
      else if (a.r.status === 'error' && a.r.message === RESUME_GAP) gaps++
      else checkTrue(`${x.name}: the answer is "Resumed: N changes replayed" or the documented gap`, false, JSON.stringify(a.r))
    }
    const dark = want.filter((s) => seq(s) >= nKill && committed[seq(s)] < answerAt(x))
    note(`${x.name} (edge ${x.edge}${answers.length ? ', then moved' : ''}): answers ${JSON.stringify(answers.map((a) => a.r.message))}; ` +
      `${got.length} received of the oracle's ${want.length}${fetched.length ? `, ${new Set(fetched).size} refetched` : ''}` +
      (QUIET.includes(x.user) ? `; ${dark.length} of its rows committed after B's kill and before its answer` : ''))
    check(`${x.name}: nothing received twice`, [], dups(got))
    check(`${x.name}: received in commit order`, [...got].sort(), got)
    check(`${x.name}: nothing beyond what RLS shows it`, [], got.filter((s) => !want.includes(s)))
    if (fetched.length) {
      check(`${x.name}: (gap) the refetch and what it received cover the oracle`, [], must.filter((s) => !cover().has(s)))
    } else {
      check(`${x.name}: what it received is the oracle, nothing missed`, must, late.includes(x) ? got.filter((s) => must.includes(s)) : got)
    }
    check(`${x.name}: realtime-js handed the application the same changes`, got, delivered(x, 2).map((q) => q.new.status))
    if (quietOnB.includes(x)) checkTrue(`${x.name}: rows of its org were committed while it was away`, dark.length > 0, dark.length)
  }
  note(`resume answers: ${resumed} resumed, ${gaps} gaps`)
  // the quiet clients of B: their positions were committed before C and D started
  const older = (x, start) => sql(`select ${lit(posAtB[x.name].split(':')[0])}::pg_lsn < ${lit(start)}::pg_lsn`) === 't'
  checkTrue('the quiet clients of B rejoined with positions committed before C and D started',
    quietOnB.length >= 2 && quietOnB.every((x) => older(x, walAt.C) && older(x, walAt.D)),
    quietOnB.map((x) => `${x.name}: ${posAtB[x.name]}`).join(' '))
  // step 4 (docs/edges.md): an edge resumes any position in the stream's window
  check('step 4: the quiet clients of B were resumed on C or D (edges started after their positions), not answered the gap',
    quietOnB.map((x) => `${x.name}: ok`), quietOnB.map((x) => `${x.name}: ${(resumes(x).find((s) => s.at >= tB) || {}).status}`))
  check('step 4: every resume answer is "Resumed", none the gap', 0, gaps)

  // C and D drain on SIGTERM
  for (const x of all) x.c.close()
  C.child.kill('SIGTERM')
  D.child.kill('SIGTERM')
  check('edges C and D: SIGTERM drains, exit 0', [0, 0], [await C.exited, await D.exited])
})

summary()
