// resume.test.mjs — resume after a dropped connection (issue 9, "Resume"; docs/protocol.md
// "Resume"). Runs on a daemon of its own with a replay buffer (replay_bytes).
//
// Users of one org (a member, a member demoted to viewer while away and promoted back after, a
// viewer) and service_role subscribe to the org's events, receive a first event and note its
// walcast_position, then drop their connections. Transactions commit while they are away: a
// public event, an event of a private contact, the demotion with an event in the same
// transaction, an event of a contact that is then erased (the contact and its events deleted),
// another event, and the promotion back. Each user reconnects with the unmodified realtime-js,
// passing the position in config.postgres_changes_options.walcast_resume_from, and must get, on an
// unfiltered and on a filtered binding, exactly the INSERTs PostgreSQL's masking view walcast.events_masked showed that user right
// after each commit (the oracle, read as the user through RLS after each one), in commit order,
// nothing twice, nothing of the erased contact, then a "Resumed" system message, then live
// events once. A position older than the buffer gets the gap signal and no replay.
import crypto from 'node:crypto'
import { Client, asUser, check, checkTrue, diffRecord, lit, metric, note, sql, sqlAsync, summary, syncStream, testCase, serviceToken, userToken, waitFor } from './lib.mjs'

const uuid = () => crypto.randomUUID()
const A = uuid()
const U = { member: uuid(), demotee: uuid(), viewer: uuid() }
const C = { pub: uuid(), priv: uuid(), gone: uuid() }
sql(`insert into orgs (id, name) values (${lit(A)}, 'rt resume');
     insert into org_roles (org_id, user_id, role) values (${lit(A)}, ${lit(U.member)}, 'member'),
       (${lit(A)}, ${lit(U.demotee)}, 'member'), (${lit(A)}, ${lit(U.viewer)}, 'viewer');
     insert into contacts (id, org_id, name, phone) values (${lit(C.pub)}, ${lit(A)}, 'Public', '+15550001234'),
       (${lit(C.priv)}, ${lit(A)}, 'Private', '+15550009876'), (${lit(C.gone)}, ${lit(A)}, 'Erased', '+15550004321');
     insert into privacy_rules (org_id, contact_id, min_role) values (${lit(A)}, ${lit(C.priv)}, 'admin')`)
await syncStream()

const ev = (id, contact) => `insert into events (id, org_id, contact_id, kind, direction, status, from_number, to_number)
  values (${lit(id)}, ${lit(A)}, ${lit(contact)}, 'call', 'inbound', 'new', '+33612345678', '+15551112222');`
const SUBS = [
  { name: 'member', token: () => userToken(U.member), uid: U.member },
  { name: 'demotee', token: () => userToken(U.demotee), uid: U.demotee },
  { name: 'viewer', token: () => userToken(U.viewer), uid: U.viewer },
  { name: 'service_role', token: () => serviceToken(), service: true },
]
// every event of the table, and a filtered binding (the filter judged on the view at each commit)
const BINDING = [{ event: '*', schema: 'public', table: 'events' },
  { event: 'INSERT', schema: 'public', table: 'events', filter: `contact_id=eq.${C.pub}` }]
const byId = (ch) => ch.got[0].filter((p) => p.eventType === 'INSERT').map((p) => p.new.id)

await testCase('resume after a dropped connection', async () => {
  // 1. connected: a first event, its position noted
  const e0 = uuid()
  // the application's way to the position (docs/protocol.md): a decode wrapper
  const decoded = SUBS.map(() => null)
  const first = await Promise.all(SUBS.map(async (s, i) => {
    const vsn = i % 2 ? '1.0.0' : '2.0.0'
    // realtime-js's own decoder for each serializer: its Serializer (2.0.0), JSON.parse (1.0.0)
    const base = (raw, cb) => (vsn === '2.0.0' ? c.client.serializer.decode(raw, cb) : cb(JSON.parse(raw)))
    const c = new Client(`first-${s.name}`, {
      token: s.token(),
      vsn,
      options: {
        decode: (raw, cb) => base(raw, (msg) => {
          if (msg.event === 'postgres_changes' && msg.payload && msg.payload.walcast_position) decoded[i] = msg.payload.walcast_position
          cb(msg)
        }),
      },
    })
    return { c, ch: await c.subscribe(`resume-${A}`, BINDING) }
  }))
  await sqlAsync(ev(e0, C.pub))
  const all = await waitFor(() => first.every(({ ch }) => byId(ch).includes(e0)), 60000)
  checkTrue('every user got the first event live', all)
  const pos = first.map(({ ch }) => {
    const cs = ch.changes()
    return cs.length ? cs[cs.length - 1].walcast_position : undefined
  })
  check('every postgres_changes push carries a walcast_position', [], pos.filter((p) => typeof p !== 'string' || !/^[0-9A-F]+\/[0-9A-F]+:[0-9A-F]+\/[0-9A-F]+$/.test(p)))
  check('a decode wrapper sees the same positions (what the application keeps)', pos, decoded)
  for (const { c } of first) c.close()

  // 2. away: each transaction, then what PostgreSQL shows each user right after its commit
  const E = { pub: uuid(), priv: uuid(), demoted: uuid(), gone: uuid(), after: uuid() }
  const want = Object.fromEntries(SUBS.map((s) => [s.name, []]))
  const observe = async (id) => {
    for (const s of SUBS) {
      const rows = await asUser(s.service ? { service: true } : { uid: s.uid }, `select * from walcast.events_masked where id = ${lit(id)}`)
      if (rows.length) want[s.name].push({ id, row: rows[0] })
    }
  }
  const steps = [
    [ev(E.pub, C.pub), E.pub],
    [ev(E.priv, C.priv), E.priv],
    [`update org_roles set role = 'viewer' where org_id = ${lit(A)} and user_id = ${lit(U.demotee)};` + ev(E.demoted, C.pub), E.demoted],
    [ev(E.gone, C.gone), null], // erased below: nothing of it may be replayed
    [`delete from events where contact_id = ${lit(C.gone)}; delete from contacts where id = ${lit(C.gone)};`, null],
    [ev(E.after, C.pub), E.after],
    [`update org_roles set role = 'member' where org_id = ${lit(A)} and user_id = ${lit(U.demotee)};`, null],
  ]
  for (const [text, id] of steps) {
    await sqlAsync(`begin; ${text} commit;`)
    if (id) await observe(id)
  }
  await syncStream()
  const held = await metric('walcast_realtime_replay_bytes')
  checkTrue('/metrics reports the replay buffer (walcast_realtime_replay_bytes > 0, under replay_bytes)', held > 0 && held <= 16 * 1024 * 1024, String(held))
  note(`the replay buffer holds ${held} bytes`)
  note(`expected per user: ${SUBS.map((s) => `${s.name} ${want[s.name].length}`).join(', ')}`)
  checkTrue('the oracle differs between users (the test can tell them apart)',
    new Set(SUBS.map((s) => JSON.stringify(want[s.name]))).size > 2)

  // 3. back: resume from the noted position
  const back = await Promise.all(SUBS.map(async (s, i) => {
    const c = new Client(`back-${s.name}`, { token: s.token(), vsn: i % 2 ? '2.0.0' : '1.0.0' })
    const ch = await c.subscribe(`resume-${A}`, BINDING, { config: { postgres_changes_options: { walcast_resume_from: pos[i] } } })
    return { s, c, ch }
  }))
  const resumed = (ch) => ch.frames().find((f) => f.event === 'system' && f.payload && f.payload.extension === 'walcast_resume')
  checkTrue('every user got the "Resumed" system message', await waitFor(() => back.every(({ ch }) => resumed(ch)), 30000))
  for (const { s, ch } of back) {
    const r = resumed(ch)
    check(`${s.name}: resume status ok`, 'ok', r && r.payload.status)
    const got = ch.got[0].filter((p) => p.eventType === 'INSERT')
    check(`${s.name}: exactly the INSERTs PostgreSQL showed at each commit, in order`, want[s.name].map((w) => w.id), got.map((p) => p.new.id))
    const diffs = got.flatMap((p) => {
      const w = want[s.name].find((x) => x.id === p.new.id)
      return w ? diffRecord(p.new, w.row).map((d) => `${p.new.id}: ${d}`) : []
    })
    check(`${s.name}: each replayed record is the masking view's row at its commit`, [], diffs.slice(0, 5))
    checkTrue(`${s.name}: nothing of the erased contact`, !ch.got[0].some((p) => p.new && p.new.contact_id === C.gone) &&
      !ch.changes().some((c) => JSON.stringify(c).includes(C.gone)))
    check(`${s.name}: the first event is not replayed`, false, got.some((p) => p.new.id === e0))
    check(`${s.name}: the filtered binding got exactly the matching INSERTs`,
      want[s.name].filter((w) => w.row.contact_id === C.pub).map((w) => w.id), ch.got[1].map((p) => p.new.id))
  }
  // 4. then live, once
  const live = uuid()
  await sqlAsync(ev(live, C.pub))
  checkTrue('live events follow the replay', await waitFor(() => back.every(({ ch }) => byId(ch).includes(live)), 60000))
  check('nothing twice', [], back.filter(({ ch }) => new Set(byId(ch)).size !== byId(ch).length).map(({ s }) => s.name))
  for (const { c } of back) c.close()
})

await testCase('a position older than the buffer: the gap signal, no replay', async () => {
  const c = new Client('gap', { token: userToken(U.member) })
  const ch = await c.subscribe(`resume-gap-${A}`, BINDING, { config: { postgres_changes_options: { walcast_resume_from: '0/1:0/1' } } })
  const sys = () => ch.frames().find((f) => f.event === 'system' && f.payload && f.payload.extension === 'walcast_resume')
  await waitFor(sys, 30000)
  const s = sys()
  check('gap: status error', 'error', s && s.payload.status)
  checkTrue('gap: the message says so', !!s && /gap/i.test(s.payload.message), s ? s.payload.message : 'none')
  check('gap: nothing replayed', 0, ch.changes().length)
  c.close()
})

await testCase('a malformed position is refused at join', async () => {
  const c = new Client('bad', { token: userToken(U.member) })
  let err = null
  try {
    await c.subscribe(`resume-bad-${A}`, BINDING, { config: { postgres_changes_options: { walcast_resume_from: 'yesterday' } } })
  } catch (e) {
    err = String(e.message || e)
  }
  checkTrue('bad position: the join fails', err !== null, String(err))
  c.close()
})
summary()
