// views.test.mjs — what each user receives through the unmodified realtime-js client equals what
// PostgreSQL shows that user (issue 9, "Tests with real clients").
//
// Users of every org role (owner, admin, analyst, member, viewer, a viewer who handles a private
// contact's events, a member who is demoted and then removed mid-stream, a viewer who is promoted),
// a member of another org and service_role subscribe through realtime-js, each with both
// serializers (vsn 1.0.0 and 2.0.0), to every table (event `*`) and through filtered bindings
// (eq, neq, in with a quoted value, ilike, is, not., several conditions, typed comparisons of
// integers, numerics, uuids and timestamps, DELETE bindings judged on the old row, INSERT
// bindings). Then transactions mixing data and policy changes are committed one by one. The oracle
// is the database: before and after each commit, the masking views walcast.<table>_masked are
// read as each user (RLS through `authenticated` + request.jwt.claims, or service_role), with the
// filter conditions evaluated by PostgreSQL in the same query. Each user must receive exactly:
//   - an INSERT or UPDATE when the view shows the user the row after the commit, with the view's
//     values (masks applied; the call note decrypted where the view shows its ciphertext);
//   - a DELETE when the view showed the user the row before the commit, its old_record holding
//     the view's values on the columns it carries (at least the primary key); an UPDATE's old
//     values only as the view showed them before the commit, none when it did not show the row;
//   - per binding, only the events of its table, event type and filter, in commit order;
// and the raw frames must have the server's shapes (record / old_record present or absent per
// action, columns with PostgreSQL type names, commit_timestamp, errors, integer ids).
import crypto from 'node:crypto'
import {
  Client, asUser, becomeSql, check, checkTrue, columnTypes, diffRecord, encryptBody, jsonQuery, lit, note,
  script, sql, summary, syncStream, testCase, waitFor, sameValue, serviceToken, userToken,
} from './lib.mjs'

const uuid = () => crypto.randomUUID()
const TABLES = ['orgs', 'org_roles', 'contacts', 'privacy_rules', 'events', 'audit_log', 'sync_health']
const PK = { orgs: ['id'], org_roles: ['org_id', 'user_id'], contacts: ['id'], privacy_rules: ['id'], events: ['id'], audit_log: ['id'], sync_health: ['id'] }

// ---- the platform ------------------------------------------------------------------------------
const A = uuid()
const B = uuid()
const U = Object.fromEntries(['owner', 'admin', 'analyst', 'member', 'viewer', 'handler', 'demotee', 'promotee', 'outsider', 'newbie'].map((n) => [n, uuid()]))
sql(`insert into orgs (id, name) values (${lit(A)}, 'rt org A'), (${lit(B)}, 'rt org B');
     insert into org_roles (org_id, user_id, role) values
       (${lit(A)}, ${lit(U.owner)}, 'owner'), (${lit(A)}, ${lit(U.admin)}, 'admin'), (${lit(A)}, ${lit(U.analyst)}, 'analyst'),
       (${lit(A)}, ${lit(U.member)}, 'member'), (${lit(A)}, ${lit(U.viewer)}, 'viewer'), (${lit(A)}, ${lit(U.handler)}, 'viewer'),
       (${lit(A)}, ${lit(U.demotee)}, 'member'), (${lit(A)}, ${lit(U.promotee)}, 'viewer'), (${lit(B)}, ${lit(U.outsider)}, 'owner')`)
const C = { pub: uuid(), priv: uuid(), pub2: uuid(), pub3: uuid(), bpub: uuid() }
sql(`insert into contacts (id, org_id, name, phone) values (${lit(C.pub)}, ${lit(A)}, 'Public', '+15550001234'),
       (${lit(C.priv)}, ${lit(A)}, 'Private', '+15550009876'), (${lit(C.bpub)}, ${lit(B)}, 'B contact', '+15550005555');
     insert into privacy_rules (org_id, contact_id, min_role) values (${lit(A)}, ${lit(C.priv)}, 'admin')`)

await syncStream()

// Subscribers: every user of A and the outsider, by their own token; service_role.
const SUBS = ['owner', 'admin', 'analyst', 'member', 'viewer', 'handler', 'demotee', 'promotee', 'outsider']
  .map((n) => ({ name: n, uid: U[n] }))
SUBS.push({ name: 'service_role', service: true })

// The bindings of every channel; `cond` is the same filter in SQL, evaluated by PostgreSQL on the
// row as the view shows it (the filtered columns are never masked).
const BINDINGS = [
  ...TABLES.map((t) => ({ b: { event: '*', schema: 'public', table: t } })),
  { b: { event: '*', schema: 'public', table: 'events', filter: 'kind=eq.sms' }, cond: `kind = 'sms'` },
  { b: { event: 'DELETE', schema: 'public', table: 'events', filter: 'status=eq.closing' }, cond: `status = 'closing'` },
  { b: { event: 'UPDATE', schema: 'public', table: 'events', filter: 'duration_s=gt.60' }, cond: `duration_s > 60` },
  { b: { event: '*', schema: 'public', table: 'events', filter: `user_id=eq.${U.handler}` }, cond: `user_id = ${lit(U.handler)}` },
  { b: { event: 'INSERT', schema: 'public', table: 'contacts' } },
  // the operators and types of docs/protocol.md "Filters", each judged by PostgreSQL
  { b: { event: '*', schema: 'public', table: 'events', filter: 'status=in.(answered,"reopened, again")' }, cond: `status in ('answered', 'reopened, again')` },
  { b: { event: '*', schema: 'public', table: 'events', filter: 'status=ilike.RE%' }, cond: `status ilike 're%'` },
  { b: { event: '*', schema: 'public', table: 'events', filter: 'kind=eq.sms,duration_s=gte.65' }, cond: `kind = 'sms' and duration_s >= 65` },
  { b: { event: '*', schema: 'public', table: 'events', filter: 'duration_s=not.is.null' }, cond: `duration_s is not null` },
  { b: { event: '*', schema: 'public', table: 'events', filter: 'status=not.eq.new' }, cond: `status <> 'new'` },
  { b: { event: '*', schema: 'public', table: 'events', filter: 'started_at=lt.2100-01-01T01:00:00+01:00' }, cond: `started_at < '2100-01-01T01:00:00+01:00'` },
  { b: { event: 'DELETE', schema: 'public', table: 'contacts', filter: 'name=eq.Third' }, cond: `name = 'Third'` },
  // numeric, not text: 30 < 5 is false (as text '30' < '5' would be true)
  { b: { event: 'INSERT', schema: 'public', table: 'sync_health', filter: 'lag_s=lt.5' }, cond: `lag_s < 5` },
]

// ---- the workload: one transaction per step, every change named ------------------------------
const E = Object.fromEntries(['e1', 'e2', 'e3', 'e4', 'e5', 'e6', 'e7', 'eb'].map((n) => [n, uuid()]))
const NOTES = { [E.e2]: 'call note: "private", ünïcode', [E.e4]: 'note of e4', [E.e5]: 'handled by the viewer' }
const body = (id) => `'${encryptBody(id, NOTES[id])}'::bytea`
const ev = (id, org, o) => `insert into events (id, org_id, contact_id, user_id, kind, direction, status, duration_s, from_number, to_number, body)
  values (${lit(id)}, ${lit(org)}, ${lit(o.contact ?? null)}, ${lit(o.user ?? null)}, ${lit(o.kind ?? 'call')}, 'inbound', ${lit(o.status ?? 'new')},
          ${o.duration ?? 'NULL'}, '+3361234' || ${lit(String(Math.floor(Math.random() * 9000) + 1000))}, '+15551112222', ${NOTES[id] ? body(id) : 'NULL'});`
const ch = (table, action, pk) => ({ table, action, pk })
const STEPS = [
  { label: 'contacts inserted', sql: `insert into contacts (id, org_id, name, phone) values (${lit(C.pub2)}, ${lit(A)}, 'Second', '+15550001111'), (${lit(C.pub3)}, ${lit(A)}, 'Third', NULL);`,
    changes: [ch('contacts', 'INSERT', { id: C.pub2 }), ch('contacts', 'INSERT', { id: C.pub3 })] },
  { label: 'events: public, private handled by a viewer, other org',
    sql: ev(E.e1, A, { contact: C.pub, duration: 9 }) + ev(E.e2, A, { contact: C.priv, user: U.handler, kind: 'sms', status: 'closing', duration: 100 }) + ev(E.eb, B, { contact: C.bpub, kind: 'sms' }),
    changes: [ch('events', 'INSERT', { id: E.e1 }), ch('events', 'INSERT', { id: E.e2 }), ch('events', 'INSERT', { id: E.eb })] },
  { label: 'update: duration 9 -> 100 (typed gt)', sql: `update events set duration_s = 100, status = 'answered' where id = ${lit(E.e1)};`, changes: [ch('events', 'UPDATE', { id: E.e1 })] },
  { label: 'update: duration 100 -> 5', sql: `update events set duration_s = 5 where id = ${lit(E.e2)};`, changes: [ch('events', 'UPDATE', { id: E.e2 })] },
  { label: 'audit and health rows', sql: `insert into audit_log (id, org_id, actor_id, action, detail) overriding system value values (900001, ${lit(A)}, ${lit(U.admin)}, 'export', '{"rows": 3, "n": [1, 2]}');
      insert into sync_health (id, org_id, source, status, lag_s) overriding system value values (900001, ${lit(A)}, 'crm', 'ok', 1.25), (900002, ${lit(B)}, 'crm', 'late', 30);`,
    changes: [ch('audit_log', 'INSERT', { id: 900001 }), ch('sync_health', 'INSERT', { id: 900001 }), ch('sync_health', 'INSERT', { id: 900002 })] },
  { label: 'org renamed', sql: `update orgs set name = 'rt org A renamed' where id = ${lit(A)};`, changes: [ch('orgs', 'UPDATE', { id: A })] },
  { label: 'demotion (member -> viewer) and an event in the same transaction',
    sql: `update org_roles set role = 'viewer' where org_id = ${lit(A)} and user_id = ${lit(U.demotee)};` + ev(E.e4, A, { contact: C.pub, duration: 61 }),
    changes: [ch('org_roles', 'UPDATE', { org_id: A, user_id: U.demotee }), ch('events', 'INSERT', { id: E.e4 })] },
  { label: 'event after the demotion (handled by a viewer)', sql: ev(E.e5, A, { contact: C.pub, user: U.viewer, kind: 'sms' }), changes: [ch('events', 'INSERT', { id: E.e5 })] },
  { label: 'promotion (viewer -> admin) and a new privacy rule',
    sql: `update org_roles set role = 'admin' where org_id = ${lit(A)} and user_id = ${lit(U.promotee)};
          insert into privacy_rules (id, org_id, contact_id, min_role) values (${lit(E.e7)}, ${lit(A)}, ${lit(C.pub2)}, 'analyst');`,
    changes: [ch('org_roles', 'UPDATE', { org_id: A, user_id: U.promotee }), ch('privacy_rules', 'INSERT', { id: E.e7 })] },
  { label: 'event of the newly protected contact', sql: ev(E.e6, A, { contact: C.pub2, kind: 'sms', duration: 70 }), changes: [ch('events', 'INSERT', { id: E.e6 })] },
  { label: 'delete the private event (DELETE binding, old row)', sql: `delete from events where id = ${lit(E.e2)};`, changes: [ch('events', 'DELETE', { id: E.e2 })] },
  { label: 'removal of the demoted member, then an event',
    sql: `delete from org_roles where org_id = ${lit(A)} and user_id = ${lit(U.demotee)};` + ev(E.e3, A, { contact: C.pub, kind: 'sms' }),
    changes: [ch('org_roles', 'DELETE', { org_id: A, user_id: U.demotee }), ch('events', 'INSERT', { id: E.e3 })] },
  { label: 'contact phone changed', sql: `update contacts set phone = '+15550004321' where id = ${lit(C.pub)};`, changes: [ch('contacts', 'UPDATE', { id: C.pub })] },
  { label: 'rule removed, protected event updated',
    sql: `delete from privacy_rules where id = ${lit(E.e7)}; update events set status = 'reopened, again', duration_s = 65 where id = ${lit(E.e6)};`,
    changes: [ch('privacy_rules', 'DELETE', { id: E.e7 }), ch('events', 'UPDATE', { id: E.e6 })] },
  { label: 'contact deleted', sql: `delete from contacts where id = ${lit(C.pub3)};`, changes: [ch('contacts', 'DELETE', { id: C.pub3 })] },
  { label: 'audit and health rows deleted', sql: `delete from audit_log where id = 900001; delete from sync_health where id = 900002;`,
    changes: [ch('audit_log', 'DELETE', { id: 900001 }), ch('sync_health', 'DELETE', { id: 900002 })] },
  { label: 'a new member', sql: `insert into org_roles (org_id, user_id, role) values (${lit(A)}, ${lit(U.newbie)}, 'viewer');`, changes: [ch('org_roles', 'INSERT', { org_id: A, user_id: U.newbie })] },
  { label: 'other org: event updated', sql: `update events set status = 'done' where id = ${lit(E.eb)};`, changes: [ch('events', 'UPDATE', { id: E.eb })] },
  // the last step: every subscriber sees its own org renamed, so its arrival means everything before arrived
  { label: 'marker: both orgs renamed', sql: `update orgs set name = name || ' (end)' where id in (${lit(A)}, ${lit(B)});`,
    changes: [ch('orgs', 'UPDATE', { id: A }), ch('orgs', 'UPDATE', { id: B })] },
]

const pkWhere = (c) => Object.entries(c.pk).map(([k, v]) => `${k} = ${lit(v)}`).join(' and ')
const pkKey = (table, row) => PK[table].map((k) => String(row?.[k])).join('/')
// One query line per (subscriber, change): the row as the view shows it, with each filtered
// binding's condition as f<i>.
function viewQueries(changes) {
  const lines = []
  for (const s of SUBS) {
    lines.push(becomeSql(s))
    for (const c of changes) {
      const conds = BINDINGS.map((x, i) => (x.cond && x.b.table === c.table ? `, (${x.cond}) as f${i}` : '')).join('')
      lines.push(jsonQuery(`select v.*${conds} from walcast.${c.table}_masked v where ${pkWhere(c)}`))
    }
  }
  lines.push('reset role;')
  return lines.join('\n')
}

// expected[sub][binding] = [{type, table, key, record | old}]
const expected = Object.fromEntries(SUBS.map((s) => [s.name, BINDINGS.map(() => [])]))
function judge(step, pre, post) {
  let k = 0
  for (const s of SUBS) {
    for (const c of step.changes) {
      const before = pre[k][0] || null
      const after = post[k][0] || null
      k++
      const row = c.action === 'DELETE' ? before : after
      if (!row) continue // the view does not show it to this user: nothing may arrive
      const flags = {}
      const cleanRow = (r) => {
        if (!r) return null
        const out = {}
        for (const [col, v] of Object.entries(r)) if (!/^f\d+$/.test(col)) out[col] = v
        if (c.table === 'events' && out.body !== null && out.body !== undefined) out.body = NOTES[out.id]
        return out
      }
      for (const [col, v] of Object.entries(row)) if (/^f\d+$/.test(col)) flags[col] = v
      const clean = cleanRow(row)
      const old = c.action === 'UPDATE' ? cleanRow(before) : null
      BINDINGS.forEach((x, i) => {
        if (x.b.table !== c.table) return
        if (x.b.event !== '*' && x.b.event !== c.action) return
        if (x.cond && flags[`f${i}`] !== true) return
        expected[s.name][i].push({ type: c.action, table: c.table, key: pkKey(c.table, clean), row: clean, old, step: step.label })
      })
    }
  }
}

// ---- run ----------------------------------------------------------------------------------------
const clients = []
// WALCAST_RT_DRY=1: no clients, only the workload and the oracle (to check the test itself)
const DRY = process.env.WALCAST_RT_DRY === '1'
if (!DRY) await testCase('every subscriber joins with both serializers', async () => {
  for (const s of SUBS) {
    for (const vsn of ['1.0.0', '2.0.0']) {
      const token = s.service ? serviceToken() : userToken(s.uid)
      const c = new Client(`${s.name}@${vsn}`, { token, vsn })
      clients.push({ sub: s, vsn, c })
    }
  }
  await Promise.all(clients.map(async (x) => { x.ch = await x.c.subscribe(`views-${x.sub.name}`, BINDINGS.map((y) => y.b)) }))
  check('every channel SUBSCRIBED with "Subscribed to PostgreSQL"', clients.length, clients.filter((x) => x.ch).length)
  // the join reply: one integer id per binding, in request order (realtime-js matched them by position)
  const bad = []
  for (const x of clients) {
    const reply = x.ch.frames().find((f) => f.event === 'phx_reply' && f.payload?.response?.postgres_changes)
    const pcs = reply?.payload?.response?.postgres_changes || []
    if (pcs.length !== BINDINGS.length || !pcs.every((p, i) => Number.isInteger(p.id) && p.table === BINDINGS[i].b.table && p.event === BINDINGS[i].b.event)) bad.push(x.c.name)
    if (x.vsn === '2.0.0' && !x.c.raw.every((r) => r.text === null || r.text.startsWith('['))) bad.push(`${x.c.name}: an object frame`)
    if (x.vsn === '1.0.0' && !x.c.raw.every((r) => r.text === null || r.text.startsWith('{'))) bad.push(`${x.c.name}: an array frame`)
  }
  check('join replies carry an integer id per binding, in order; frames in the serializer asked for', [], bad)
})

if (clients.every((x) => x.ch)) {
  await testCase('the workload, judged by PostgreSQL as every user', async () => {
    for (const step of STEPS) {
      const lines = await script(`${viewQueries(step.changes)}\nbegin;\n${step.sql}\ncommit;\n${viewQueries(step.changes)}\n`)
      const n = SUBS.length * step.changes.length
      checkTrue(`step "${step.label}": oracle answered`, lines.length === 2 * n, `${lines.length} lines`)
      judge(step, lines.slice(0, n).map((l) => JSON.parse(l)), lines.slice(n).map((l) => JSON.parse(l)))
    }
    // the oracle itself: the masks and rules really bite (the test would prove little otherwise)
    const viewerSees = await asUser({ uid: U.viewer }, `select from_number from walcast.events_masked where id = ${lit(E.e1)}`)
    check('oracle: a viewer sees a masked number', true, /^\*+\d{4}$/.test(viewerSees[0]?.from_number || ''))
    check('oracle: the handler (a viewer) saw the private event, the viewer did not', [1, 0],
      [expected.handler[4].filter((e) => e.key === E.e2).length > 0 ? 1 : 0, expected.viewer[4].filter((e) => e.key === E.e2).length])
    check('oracle: after removal the demoted member sees no new event', 0, expected.demotee[4].filter((e) => e.key === E.e3).length)

    const want = (x) => expected[x.sub.name].reduce((n, l) => n + l.length, 0)
    const have = (x) => x.ch.got.reduce((n, l) => n + l.length, 0)
    const arrived = await waitFor(() => clients.every((x) => have(x) >= want(x)), 90000)
    checkTrue('every client received at least as many events as PostgreSQL shows its user', arrived,
      clients.filter((x) => have(x) < want(x)).map((x) => `${x.c.name} ${have(x)}/${want(x)}`).join(', '))
    await new Promise((r) => setTimeout(r, 1500)) // room for anything extra to show up

    const types = Object.fromEntries(TABLES.map((t) => [t, columnTypes(t)]))
    for (const x of clients) {
      const name = x.c.name
      // sequences per binding
      const seqBad = []
      const valBad = []
      BINDINGS.forEach((bd, i) => {
        const got = x.ch.got[i].map((p) => ({ type: p.eventType, table: p.table, key: pkKey(p.table, p.eventType === 'DELETE' ? p.old : p.new), p }))
        const exp = expected[x.sub.name][i]
        const g = got.map((e) => `${e.type} ${e.table} ${e.key}`)
        const w = exp.map((e) => `${e.type} ${e.table} ${e.key}`)
        if (g.join('|') !== w.join('|')) seqBad.push(`binding ${i} ${JSON.stringify(bd.b)}: got [${g.join(', ')}] want [${w.join(', ')}]`)
        got.forEach((e, j) => {
          const ex = exp[j]
          if (!ex || `${ex.type} ${ex.key}` !== `${e.type} ${e.key}`) return
          if (e.type === 'DELETE') {
            // old_record: at least the primary key, and the view's values on every column it carries
            const d = Object.entries(e.p.old).filter(([k, v]) => !(k in ex.row) || !sameValue(v, ex.row[k])).map(([k, v]) => `${k}=${JSON.stringify(v)}`)
            const missing = PK[e.table].filter((k) => !(k in e.p.old))
            if (d.length || missing.length) valBad.push(`binding ${i} DELETE ${e.key} (${ex.step}): ${[...d, ...missing.map((k) => 'no ' + k)].join('; ')}`)
          } else {
            const d = diffRecord(e.p.new, ex.row)
            if (d.length) valBad.push(`binding ${i} ${e.type} ${e.key} (${ex.step}): ${d.join('; ')}`)
          }
          if (e.type === 'UPDATE') {
            // old_record: only what the user saw before the transaction, as the view showed it;
            // nothing when the user could not see the old row
            const o = Object.entries(e.p.old || {})
            const d = ex.old ? o.filter(([k, v]) => !(k in ex.old) || !sameValue(v, ex.old[k])).map(([k, v]) => `${k}=${JSON.stringify(v)}`)
              : o.map(([k, v]) => `${k}=${JSON.stringify(v)} (the user could not see the old row)`)
            if (d.length) valBad.push(`binding ${i} UPDATE old ${e.key} (${ex.step}): ${d.join('; ')}`)
          }
        })
      })
      check(`${name}: exactly the events PostgreSQL shows this user, per binding, in commit order`, [], seqBad)
      check(`${name}: values exactly as the masking views show them`, [], valBad)

      // raw shapes
      const shapeBad = []
      const ids = new Set((x.ch.frames().find((f) => f.event === 'phx_reply' && f.payload?.response?.postgres_changes)?.payload.response.postgres_changes || []).map((p) => p.id))
      for (const p of x.ch.changes()) {
        const d = p.data || {}
        const tag = `${d.type} ${d.table}`
        if (!Array.isArray(p.ids) || !p.ids.length || !p.ids.every((id) => Number.isInteger(id) && ids.has(id))) shapeBad.push(`${tag}: ids ${JSON.stringify(p.ids)}`)
        if (d.schema !== 'public') shapeBad.push(`${tag}: schema ${d.schema}`)
        if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$/.test(d.commit_timestamp || '')) shapeBad.push(`${tag}: commit_timestamp ${d.commit_timestamp}`)
        if (!('errors' in d) || !(d.errors === null || Array.isArray(d.errors))) shapeBad.push(`${tag}: errors ${JSON.stringify(d.errors)}`)
        if (d.errors !== null && d.errors !== undefined) shapeBad.push(`${tag}: unexpected errors ${JSON.stringify(d.errors)}`)
        const hasRec = 'record' in d
        const hasOld = 'old_record' in d
        const wantKeys = { INSERT: [true, false], UPDATE: [true, true], DELETE: [false, true] }[d.type]
        if (!wantKeys || wantKeys[0] !== hasRec || wantKeys[1] !== hasOld) shapeBad.push(`${tag}: record ${hasRec}, old_record ${hasOld}`)
        if (!Array.isArray(d.columns)) shapeBad.push(`${tag}: no columns`)
        else {
          for (const c of d.columns) {
            if (c.name === 'body' && d.table === 'events') continue // encrypted: delivered as its plaintext
            if (types[d.table]?.[c.name] !== c.type) shapeBad.push(`${tag}: column ${c.name} type ${c.type}, PostgreSQL says ${types[d.table]?.[c.name]}`)
          }
          if (hasRec) {
            const names = d.columns.map((c) => c.name).sort().join(',')
            if (names !== Object.keys(d.record).sort().join(',')) shapeBad.push(`${tag}: columns [${names}] vs record keys [${Object.keys(d.record).sort()}]`)
          }
        }
      }
      check(`${name}: raw pushes have the server's shapes`, [], shapeBad.slice(0, 5))
    }
    for (const x of clients.filter((y) => y.sub.name === 'outsider')) {
      const orgOf = (p) => { const r = p.eventType === 'DELETE' ? p.old : p.new; return p.table === 'orgs' ? r?.id : r?.org_id }
      check(`${x.c.name}: a member of another org gets nothing of org A`, 0, x.ch.got.flat().filter((p) => orgOf(p) === A).length)
      checkTrue(`${x.c.name}: but gets its own org's changes`, x.ch.got.flat().some((p) => orgOf(p) === B))
    }
  })
}
note(`${clients.length} clients, ${STEPS.length} transactions`)
for (const s of SUBS) note(`expected for ${s.name}: ${expected[s.name].map((l) => l.length).join(' ')}${DRY ? ' ' + JSON.stringify(expected[s.name].map((l) => l.map((e) => e.type[0] + ':' + e.table + ':' + e.step.slice(0, 12)))) : ''}`)
for (const x of clients) x.c.close()
summary()
