// netns_edges.test.mjs — realtime-js users on two edges, each edge on its own host, through three
// failures (issue 12, "Tests"). tests/integration/netns_edges.sh builds the hosts (network
// namespaces: PostgreSQL, a Sentinel-managed Redis primary and replica, an active walcast and a
// standby, two edges), runs this file in the servers' namespace and performs the failures.
//
// Users of three orgs and five roles each hold one client on edge A and one on edge B (a short
// heartbeat, 1.5 s, so that a silent edge is noticed). The test is the load balancer: a client
// (re)connects to its home edge while that edge's /readyz answers 200, else to the other one.
// Four segments of events, one per transaction, written without pause; between two segments a
// change of the policy tables (a privacy rule set, changed, removed; members joining, promoted,
// demoted, leaving). The shell script performs one failure inside each of the first three
// segments, while the events flow: (1) kill -9 of the active walcast (the standby takes over),
// (2) edge A's host cut off (its clients' heartbeats go unanswered: they reconnect to edge B and
// rejoin with their last walcast_position), (3) the Redis primary's host cut off (Sentinel
// promotes the replica; the active instance and the edges follow it). A segment ends once its
// failure is over and every client has received events committed after it (after its resume, for
// a client that moved). Its oracle is taken then, before the next policy change: what
// walcast.events_masked shows each user through RLS.
// Checked per client and segment: exactly the oracle's events, in commit order, nothing twice,
// each record the view's row, the same changes handed to the application; edge A's clients
// resumed once each ("Resumed: N changes replayed"), edge B's never reconnected.
// Control (NSE_CTL, a directory): this file writes segN.start when segment N begins and
// done at the end; the shell script writes evN.at (the failure's time, ms) and evN.done (the
// failure is over: the standby took over, the host is cut, the replica is promoted).
// Environment: NSE_EDGE_A, NSE_EDGE_B (http://HOST:PORT), NSE_IDS, NSE_CTL.
import fs from 'node:fs'
import {
  asUser, check, checkFeeds, checkTrue, dups, edgeClient, edgeDelivered, edgeResumes, edgeWire, lit, note, sleep, sqlAsync,
  summary, syncStream, testCase, waitFor,
} from './lib.mjs'

const HTTP_A = process.env.NSE_EDGE_A
const HTTP_B = process.env.NSE_EDGE_B
const EDGES = [HTTP_A, HTTP_B]
const CTL = process.env.NSE_CTL
const ID = JSON.parse(process.env.NSE_IDS)
const { X, Y, Z, CXpub, CXpriv, CY, CZ } = ID
const U = Object.fromEntries(['adminX', 'analystX', 'memberX', 'viewerX', 'memberY', 'memberZ', 'mover'].map((k) => [k, ID[k]]))

const ctlPath = (name) => `${CTL}/${name}`
const mark = (name) => fs.writeFileSync(ctlPath(name), String(Date.now()))
const marked = (name) => (fs.existsSync(ctlPath(name)) ? Number(fs.readFileSync(ctlPath(name), 'utf8')) || 0 : null)

// ---- the load balancer: /readyz of each edge, every 250 ms ------------------------------------
const healthy = new Set(EDGES)
let polling = true
const poller = (async () => {
  while (polling) {
    await Promise.all(EDGES.map(async (e) => {
      let ok = false
      try { ok = (await fetch(`${e}/readyz`, { signal: AbortSignal.timeout(700) })).status === 200 } catch { ok = false }
      if (ok) healthy.add(e)
      else healthy.delete(e)
    }))
    await sleep(250)
  }
})()
const route = (home) => () => [home, ...EDGES.filter((e) => e !== home)].find((e) => healthy.has(e)) || home

// ---- the events -------------------------------------------------------------------------------
// [org, contact, handling user]: X's public and private contacts (the private one's events
// handled by memberX), no contact (every member of the org), Y, Z
const TARGETS = [[X, CXpub, null], [X, CXpriv, U.memberX], [Y, CY, null], [X, null, null], [Z, CZ, null], [Y, null, null]]
const tag = (s) => `nse-${s}-`
const ev = (s, n) => {
  const [org, contact, handler] = TARGETS[n % TARGETS.length]
  return `insert into events (org_id, contact_id, user_id, kind, direction, status, from_number, to_number)
    values (${lit(org)}, ${lit(contact)}, ${lit(handler)}, 'call', 'inbound', ${lit(`${tag(s)}${String(n).padStart(5, '0')}`)},
            '+33612345678', '+15551112222')`
}
const oracle = (uid, s) => asUser({ uid }, `select * from walcast.events_masked where status like ${lit(`${tag(s)}%`)} order by status`)

// the policy changes before segments 2, 3 and 4
const POLICY = [
  null,
  `insert into privacy_rules (org_id, contact_id, min_role) values (${lit(X)}, ${lit(CXpub)}, 'analyst');
   insert into org_roles (org_id, user_id, role) values (${lit(X)}, ${lit(U.mover)}, 'viewer')`,
  `update org_roles set role = 'member' where org_id = ${lit(X)} and user_id = ${lit(U.analystX)};
   update org_roles set role = 'analyst' where org_id = ${lit(X)} and user_id = ${lit(U.viewerX)};
   delete from privacy_rules where org_id = ${lit(X)} and contact_id = ${lit(CXpriv)}`,
  `delete from org_roles where org_id = ${lit(Y)} and user_id = ${lit(U.mover)};
   update privacy_rules set min_role = 'admin' where org_id = ${lit(X)} and contact_id = ${lit(CXpub)}`,
]
const FAILURES = ['kill -9 of the active instance', "edge A's host cut off", "the Redis primary's host cut off"]

// ---- the clients ------------------------------------------------------------------------------
const BINDING = [{ event: '*', schema: 'public', table: 'events' }]
await syncStream()
const clients = []
for (const [user, uid] of Object.entries(U)) {
  for (const home of EDGES) {
    clients.push(await edgeClient({
      name: `${user}@${home === HTTP_A ? 'A' : 'B'}`, user, uid, home, route: route(home), bindings: BINDING,
      options: { heartbeatIntervalMs: 1500 },
    }))
  }
}
const onA = clients.filter((x) => x.home === HTTP_A)
const onB = clients.filter((x) => x.home === HTTP_B)
const lastResumeAt = (x) => Math.max(0, ...edgeResumes(x).map((r) => r.at))

// the longest wait between two changes arriving on a client, in ms
const longestPause = (x, s) => {
  const at = edgeWire(x, tag(s)).map((w) => w.at)
  return at.slice(1).reduce((m, t, i) => Math.max(m, t - at[i]), 0)
}

const want = {}
const written = {}
await testCase('four segments of events under three failures', async () => {
  for (let s = 1; s <= POLICY.length; s++) {
    if (POLICY[s - 1]) await sqlAsync(POLICY[s - 1])
    mark(`seg${s}.start`)
    let n = 0
    const failure = s <= FAILURES.length ? s : null
    // live after the failure: every client has received 3 events of this segment that arrived
    // after the failure was over and after its own last resume
    const after = () => {
      const done = failure ? marked(`ev${failure}.done`) : 0
      return done !== null && clients.every((x) => edgeWire(x, tag(s)).filter((w) => w.at > Math.max(done, lastResumeAt(x))).length >= 3)
    }
    const deadline = Date.now() + 120000
    for (let checked = 0, live = false; !live && Date.now() < deadline;) {
      await sqlAsync(ev(s, n++))
      await sleep(15)
      if (Date.now() - checked > 250) live = after(), checked = Date.now()
    }
    written[s] = n
    checkTrue(`segment ${s}: every client receives changes committed after ${failure ? FAILURES[failure - 1] : 'the last policy change'}`,
      after(), clients.map((x) => `${x.name}: ${edgeWire(x, tag(s)).length}`).join(', '))
    want[s] = Object.fromEntries(await Promise.all(Object.entries(U).map(async ([user, uid]) => [user, await oracle(uid, s)])))
    note(`segment ${s}: ${n} transactions` + (failure ? `, with ${FAILURES[failure - 1]}` : ''))
  }
  mark('done')
  polling = false
  await poller

  // what is still on its way arrives now
  await waitFor(() => clients.every((x) => Object.keys(want).every((s) => edgeWire(x, tag(s)).length >= want[s][x.user].length)), 30000)
  await sleep(500)
  for (const s of Object.keys(want)) checkFeeds(clients, want[s], tag(s), `segment ${s}`)
  for (const x of clients) {
    const got = Object.keys(want).flatMap((s) => edgeWire(x, tag(s)).map((w) => w.status))
    check(`${x.name}: nothing received twice`, [], dups(got))
    check(`${x.name}: realtime-js handed the application the same changes`, got,
      Object.keys(want).flatMap((s) => edgeDelivered(x, tag(s)).map((q) => q.new.status)))
  }
  const seen = new Set(Object.values(want).flatMap((w) => Object.values(w).map((rows) => rows.map((r) => r.status).join())))
  checkTrue(`the oracle tells the users and segments apart (${seen.size} different feeds)`, seen.size >= 20, seen.size)
})

await testCase("edge A's clients moved to edge B and resumed there; edge B's stayed", async () => {
  const cut = marked('ev2.at')
  for (const x of onA) {
    const rs = edgeResumes(x)
    note(`${x.name}: ${x.c.sockets.length} connections, resume answers ${JSON.stringify(rs.map((r) => [r.at - cut, r.message]))}`)
    checkTrue(`${x.name}: one resume, after the cut, answered "Resumed: N changes replayed"`,
      rs.length === 1 && rs[0].at > cut && rs[0].status === 'ok' && /^Resumed: \d+ changes replayed$/.test(rs[0].message),
      JSON.stringify(rs))
    checkTrue(`${x.name}: its socket now is edge B's`, x.c.sockets.at(-1).url.startsWith(HTTP_B.replace(/^http/, 'ws')), x.c.sockets.at(-1).url)
  }
  for (const x of onB) check(`${x.name}: no resume, no reconnect`, [0, 1], [edgeResumes(x).length, x.c.sockets.length])
  const resumed = onA.map((x) => (edgeResumes(x)[0] || { at: NaN }).at - cut)
  console.log(`# figure edge_cut_to_resume_ms max=${Math.max(...resumed)} min=${Math.min(...resumed)}`)
  for (let s = 1; s <= FAILURES.length; s++) {
    console.log(`# figure segment ${s} (${FAILURES[s - 1]}): longest pause in a client's feed ${Math.max(...clients.map((x) => longestPause(x, s)))} ms, ` +
      `${written[s]} transactions`)
  }
})

for (const x of clients) x.c.close()
summary()
