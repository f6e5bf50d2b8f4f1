// edge.test.mjs — realtime-js on two stateless edges (issue 12; docs/edges.md). tests/integration/edge.sh
// starts the active instance (slot, redis_stream sink, postgres checkpoint store) and two edges
// ([edge] enabled, a realtime sink each), then runs this file.
//
// Users of three orgs (an admin, a member and a viewer in X, a member of Y, a member of Z, and a
// newcomer who joins X later and leaves again) each hold one client on edge A and one on edge B.
// The orgs, memberships and the first privacy rule were committed (and checkpointed by the active
// instance) before the edges started: the edges know them from the shared checkpoint only.
// Phases of events, one per transaction, each after a change of the policy tables (a privacy
// rule set, changed, removed; a member joining, promoted, leaving): every client receives exactly
// the events PostgreSQL's masking view walcast.events_masked shows its user, taken right after
// the phase (before the next policy change), record by record.
// Then, under a write load, edge A is SIGKILLed: its clients' transport goes to edge B (what a
// load balancer does), realtime-js reconnects and rejoins by itself with the last walcast_position
// it saw; edge B answers walcast_resume: "Resumed" (what it received then equals the oracle
// exactly) or the documented gap (a refetch as its user, plus what it received, equals the
// oracle). Nothing twice either way; edge B's own clients go on undisturbed.
// Last, edge B (now holding every client) is SIGKILLed too, with no edge left; this file starts
// edge C only then (the command line edge.sh wrote), and the transport sends the clients to it
// once its /readyz is 200 (as a load balancer's health check does). Every position the clients
// hold was committed before edge C started, so each resume is exact only if C's replay buffer was
// filled from the stream's window at its start (docs/edges.md, "Resume on any edge"): every
// answer must be "Resumed" and what each client received equal to the oracle.
// Environment (edge.sh): EDGE_TEST_HTTP_A, _B, _C, EDGE_TEST_PID_A, _B, EDGE_TEST_C_ARGV
// (edge C's argv, one per line), EDGE_TEST_C_PID (where its pid goes), EDGE_TEST_C_ERR (its
// stderr), EDGE_TEST_IDS.
import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import { openSync, readFileSync, writeFileSync } from 'node:fs'
import { RESUME_GAP, check, checkFeeds, checkTrue, dups, edgeClient, edgeDelivered, edgeResumes, edgeWire, encryptBody, lit, metric, note, sleep, sqlAsync, statusEvent, statusOracle, summary, syncStream, testCase, waitFor } from './lib.mjs'

const HTTP_A = process.env.EDGE_TEST_HTTP_A
const HTTP_B = process.env.EDGE_TEST_HTTP_B
const HTTP_C = process.env.EDGE_TEST_HTTP_C
const PID_A = Number(process.env.EDGE_TEST_PID_A)
const PID_B = Number(process.env.EDGE_TEST_PID_B)
const EDGES = [HTTP_A, HTTP_B] // edge C joins once it is ready
const dead = new Set()

// the orgs, memberships, contacts and the first privacy rule: written by edge.sh before the edges
// started, so the edges know them only from the shared checkpoint
const ID = JSON.parse(process.env.EDGE_TEST_IDS)
const { X, Y, Z, CY, CZ } = ID
const CX = { pub: ID.CXpub, priv: ID.CXpriv }
const U = { adminX: ID.adminX, memberX: ID.memberX, viewerX: ID.viewerX, memberY: ID.memberY, memberZ: ID.memberZ, newbie: ID.newbie }
const RULE_PUB = ID.rulePub

const TARGETS = [[X, CX.pub], [X, CX.priv], [Y, CY], [Z, CZ], [X, CX.pub], [Y, CY]]
const ev = (p, n) => statusEvent('edge', p, n, TARGETS)
// the same with an encrypted body (events.body: the view shows it to analysts and above, to others
// null; docs/encryption.md): the active instance publishes the ciphertext, the edges decrypt it
// with their own keys. NOTES: each such event's plaintext by id
const NOTES = {}
const evNote = (p, n) => {
  const id = crypto.randomUUID()
  NOTES[id] = `edge note ${p}-${n} ✓`
  return ev(p, n).replace('insert into events (', 'insert into events (id, body, ')
    .replace('values (', `values (${lit(id)}, '${encryptBody(id, NOTES[id])}'::bytea, `)
}
// where the view shows a body (the ciphertext), the client receives its plaintext
const plain = (rows) => rows.map((r) => (r.body === null || r.body === undefined ? r : { ...r, body: NOTES[r.id] }))
// what PostgreSQL shows UID of phase P's events now, in commit order
const oracle = (uid, p) => statusOracle(uid, `edge-${p}-`)

// ---- the clients ------------------------------------------------------------------------------
// each connects to its home edge while it lives, else to the other one (the load balancer's
// part); no edge alive: the dead home, whose refused connection realtime-js retries
const route = (home) => () => [home, ...EDGES.filter((e) => e !== home)].find((e) => !dead.has(e)) || home
const BINDING = [{ event: '*', schema: 'public', table: 'events' }]
const edgeClientOn = (user, uid, home) =>
  edgeClient({ name: `${user}@${home === HTTP_A ? 'A' : 'B'}`, user, uid, home, route: route(home), bindings: BINDING })
// the postgres_changes frames of phase P on a channel: {at, status, id, position, record}
const wire = (x, p) => edgeWire(x, `edge-${p}-`)
const delivered = (x, p) => edgeDelivered(x, `edge-${p}-`)
const resumes = edgeResumes

// each user's events of phase p: exactly the oracle's, in commit order, each record the view's row
const checkPhase = (clients, want, p) => checkFeeds(clients, want, `edge-${p}-`, `phase ${p}`)

await syncStream()
const clients = []
for (const [user, uid] of Object.entries(U)) for (const home of EDGES) clients.push(await edgeClientOn(user, uid, home))

// the policy changes before each phase (none before the first)
const POLICY = [
  null,
  `insert into privacy_rules (id, org_id, contact_id, min_role) values (${lit(RULE_PUB)}, ${lit(X)}, ${lit(CX.pub)}, 'admin');
   insert into org_roles (org_id, user_id, role) values (${lit(X)}, ${lit(U.newbie)}, 'member')`,
  `update org_roles set role = 'member' where org_id = ${lit(X)} and user_id = ${lit(U.viewerX)};
   delete from privacy_rules where org_id = ${lit(X)} and contact_id = ${lit(CX.priv)}`,
  `update privacy_rules set min_role = 'member' where id = ${lit(RULE_PUB)};
   delete from org_roles where org_id = ${lit(X)} and user_id = ${lit(U.newbie)}`,
]
const N = 8

await testCase('both edges: each user its own rows, across membership and privacy-rule changes', async () => {
  check('every client is connected to its edge (walcast_realtime_connections)', [6, 6],
    [await metric('walcast_realtime_connections', HTTP_A), await metric('walcast_realtime_connections', HTTP_B)])
  const seen = new Set()
  for (let p = 1; p <= POLICY.length; p++) {
    if (POLICY[p - 1]) await sqlAsync(POLICY[p - 1])
    for (let n = 0; n < N; n++) await sqlAsync(evNote(p, n))
    const want = Object.fromEntries(await Promise.all(Object.entries(U).map(async ([user, uid]) => [user, plain(await oracle(uid, p))])))
    for (const user of Object.keys(U)) seen.add(JSON.stringify(want[user]))
    await waitFor(() => clients.every((x) => wire(x, p).length >= want[x.user].length), 30000)
    await sleep(300) // anything beyond the oracle would arrive now
    checkPhase(clients, want, p)
  }
  checkTrue('the oracle tells the users and phases apart', seen.size >= 10, seen.size)
  const bodies = clients.flatMap((x) => [1, 2, 3, 4].flatMap((p) => wire(x, p).map((w) => w.record.body)))
  checkTrue('bodies: decrypted by the edges for some users, hidden (null) from others',
    bodies.some((b) => typeof b === 'string' && b.startsWith('edge note ')) && bodies.some((b) => b === null),
    JSON.stringify(bodies.slice(0, 6)))
})

// a write load of phase P: one event every 20 ms until end(); n counts them
function startLoad(P) {
  const load = { n: 0, stopped: false }
  const done = (async () => {
    while (!load.stopped) {
      await sqlAsync(ev(P, load.n++))
      await sleep(20)
    }
  })()
  load.end = async () => { load.stopped = true; await done }
  return load
}

// waits until every channel of list got a walcast_resume answer after t0 (checked as what);
// returns each gap-answered client's refetch (the oracle of phase P as its user, taken then)
async function answers(list, P, t0, what) {
  const refetch = {}
  const answered = () => list.every((x) => {
    const r = resumes(x).find((s) => s.at >= t0)
    if (r && r.status === 'error' && !refetch[x.name]) refetch[x.name] = oracle(x.uid, P)
    return r
  })
  checkTrue(what, await waitFor(answered, 60000), list.map((x) => `${x.name}: ${JSON.stringify(x.ch.statuses.slice(-3))}`).join('; '))
  return refetch
}

// what each client received of phase P since t0 against want (the oracle by user): nothing twice,
// in commit order, nothing RLS hides; the oracle exactly when resumed, with the refetch when the
// answer was the gap; what realtime-js handed the application the same. more(x, answer, received,
// oracle, refetched) adds a case's own checks.
async function checkResumed(clients, P, t0, refetch, want, more = () => {}) {
  for (const x of clients) {
    const w = want[x.user].map((r) => r.status)
    const r = resumes(x).find((s) => s.at >= t0)
    const gap = r && r.status === 'error'
    const fetched = gap ? (await refetch[x.name]).map((row) => row.status) : []
    const cover = () => new Set([...wire(x, P).map((v) => v.status), ...fetched])
    await waitFor(() => w.every((s) => cover().has(s)), 30000)
    await sleep(200)
    const got = wire(x, P).map((v) => v.status)
    check(`${x.name}: nothing received twice`, [], dups(got))
    check(`${x.name}: received in commit order`, [...got].sort(), got)
    check(`${x.name}: nothing beyond what RLS shows it`, [], got.filter((s) => !w.includes(s)))
    more(x, r, got, w, fetched)
    if (gap) check(`${x.name}: (gap) the refetch and what it received make the oracle`, w, [...cover()].sort())
    else check(`${x.name}: what it received is the oracle, nothing missed`, w, got)
    check(`${x.name}: realtime-js handed the application the same changes`, got, delivered(x, P).map((q) => q.new.status))
  }
}

await testCase('kill -9 of edge A under load: its clients resume on edge B', async () => {
  const P = POLICY.length + 1
  const load = startLoad(P)
  const onA = clients.filter((x) => x.home === HTTP_A)
  const onB = clients.filter((x) => x.home === HTTP_B)
  const busy = clients.filter((x) => x.user !== 'newbie')
  checkTrue('every client receives the load before the kill', await waitFor(() => busy.every((x) => wire(x, P).length >= 3), 30000))
  const t0 = Date.now()
  process.kill(PID_A, 'SIGKILL')
  dead.add(HTTP_A)
  note(`killed edge A (pid ${PID_A}) after ${load.n} transactions of the load`)

  const refetch = await answers(onA, P, t0, 'every channel of edge A rejoined on edge B and got a walcast_resume answer')
  const rejoinMs = onA.map((x) => (resumes(x).find((s) => s.at >= t0) || { at: NaN }).at - t0)
  const answerAt = (x) => (resumes(x).find((s) => s.at >= t0) || { at: Infinity }).at
  checkTrue('changes committed after the rejoin arrive live',
    await waitFor(() => onA.filter((x) => x.user !== 'newbie').every((x) => wire(x, P).some((w) => w.at > answerAt(x))), 30000))
  await load.end()
  note(`the load committed ${load.n} transactions; edge A's channels answered ${rejoinMs.join(', ')} ms after the kill`)
  console.log(`# edge_failover_ms max=${Math.max(...rejoinMs)}`)
  check('edge B holds every client', 12, await waitFor(async () => (await metric('walcast_realtime_connections', HTTP_B)) === 12 && 12, 20000))
  const want = Object.fromEntries(await Promise.all(Object.entries(U).map(async ([user, uid]) => [user, await oracle(uid, P)])))
  await checkResumed(clients, P, t0, refetch, want, (x, r, got, w, fetched) => {
    if (x.home === HTTP_A) {
      note(`${x.name}: answer "${r && r.message}"; ${got.length} received of the oracle's ${w.length}` + (r && r.status === 'error' ? `, ${fetched.length} refetched` : ''))
      checkTrue(`${x.name}: the answer is "Resumed: N changes replayed" or the documented gap`,
        r && ((r.status === 'ok' && /^Resumed: \d+ changes replayed$/.test(r.message)) ||
          (r.status === 'error' && r.message === RESUME_GAP)),
        JSON.stringify(r))
    } else {
      check(`${x.name}: (edge B) no resume, no reconnect`, [0, 1], [resumes(x).length, x.c.sockets.length])
    }
  })
  checkTrue('edge A\'s clients resumed exactly (edge B\'s replay buffer reaches back to their positions)',
    onA.every((x) => { const r = resumes(x).find((s) => s.at >= t0); return r && r.status === 'ok' }))
})

await testCase('kill -9 of edge B, then edge C started: every client resumes on it from before its start', async () => {
  const P = POLICY.length + 2
  const load = startLoad(P)
  const busy = clients.filter((x) => x.user !== 'newbie')
  checkTrue('every client receives the load on edge B', await waitFor(() => busy.every((x) => wire(x, P).length >= 3), 30000))
  const t0 = Date.now()
  process.kill(PID_B, 'SIGKILL')
  dead.add(HTTP_B)
  await sleep(500) // the load goes on: positions move on while no edge serves the clients
  const argv = readFileSync(process.env.EDGE_TEST_C_ARGV, 'utf8').trim().split('\n')
  const err = openSync(process.env.EDGE_TEST_C_ERR, 'a')
  const edgeC = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', err] })
  writeFileSync(process.env.EDGE_TEST_C_PID, String(edgeC.pid))
  const tC = Date.now()
  const ready = async () => (await fetch(`${HTTP_C}/readyz`).then((r) => r.status).catch(() => 0)) === 200
  await waitFor(async () => edgeC.exitCode !== null || await ready(), 60000)
  checkTrue('edge C becomes ready (caught up with the stream)', await ready(), `exit code ${edgeC.exitCode}`)
  const readyMs = Date.now() - tC
  EDGES.push(HTTP_C)
  note(`killed edge B after ${load.n} transactions of the load; edge C started ${tC - t0} ms later, ready after ${readyMs} ms`)

  const refetch = await answers(clients, P, t0, 'every channel rejoined on edge C and got a walcast_resume answer')
  const answerAt = (x) => (resumes(x).find((s) => s.at >= t0) || { at: Infinity }).at
  checkTrue('changes committed after the rejoin arrive live',
    await waitFor(() => busy.every((x) => wire(x, P).some((w) => w.at > answerAt(x))), 30000))
  await load.end()
  console.log(`# edge_c_ready_ms=${readyMs} resume_answer_ms_max=${Math.max(...clients.map((x) => answerAt(x) - t0))}`)
  check('edge C holds every client', 12, await waitFor(async () => (await metric('walcast_realtime_connections', HTTP_C)) === 12 && 12, 20000))
  const want = Object.fromEntries(await Promise.all(Object.entries(U).map(async ([user, uid]) => [user, await oracle(uid, P)])))
  await checkResumed(clients, P, t0, refetch, want)
  const onC = clients.map((x) => resumes(x).find((s) => s.at >= t0))
  note(`answers: ${onC.map((r) => r && r.message).join('; ')}`)
  checkTrue('every client resumed exactly on edge C, whose start came after their positions ("Resumed: N changes replayed", no gap)',
    onC.every((r) => r && r.status === 'ok' && /^Resumed: \d+ changes replayed$/.test(r.message)),
    onC.map((r) => JSON.stringify(r)).join('; '))
  checkTrue('... and some of them had missed changes while no edge served them (a non-empty replay)',
    onC.some((r) => r && /^Resumed: [1-9]\d* changes replayed$/.test(r.message)))
})

for (const x of clients) x.c.close()
summary()
