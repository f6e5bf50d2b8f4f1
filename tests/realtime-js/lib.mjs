// lib.mjs — shared helpers of the realtime-js integration tests (tests/integration/realtime.sh
// runs each *.test.mjs here inside the harness, against `walcast run` with a realtime sink).
//
// What it offers:
//   - TAP-like checks ("ok - NAME" / "not ok - NAME: expected ..., got ...") and a summary whose
//     exit status the shell script uses; pending cases that run only with WALCAST_RT_PENDING=1;
//   - JWTs minted with the test's HS256 secret (WALCAST_AUTH_JWT_SECRET, as tests/integration/jwt.sh);
//   - SQL through psql (the harness's PG* environment): as the superuser, and as a user through
//     PostgreSQL's own RLS and masking views (the oracle of every test here);
//   - realtime-js clients (unmodified @supabase/realtime-js, `ws` transport) whose transport also
//     records every raw frame, so that the tests see both what the application gets and the exact
//     wire shapes (keys present or absent);
//   - raw `ws` connections speaking the Phoenix protocol by hand, for hostile inputs;
//   - waiting for conditions with generous timeouts (the machine is slow and busy).
//
// Environment (set by realtime.sh): WALCAST_RT_HTTP (http://127.0.0.1:PORT), WALCAST_AUTH_JWT_SECRET,
// WALCAST_PID (the daemon, for its memory), WALCAST_BIN and WALCAST_KEYS_FILE (walcast encrypt).
import { execFile, execFileSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import { promisify } from 'node:util'
import { RealtimeClient } from '@supabase/realtime-js'
import WebSocket from 'ws'

const execFileP = promisify(execFile)

export const HTTP = process.env.WALCAST_RT_HTTP || 'http://127.0.0.1:8080'
export const WS = HTTP.replace(/^http/, 'ws')
export const SECRET = process.env.WALCAST_AUTH_JWT_SECRET || ''
export const PENDING = process.env.WALCAST_RT_PENDING === '1'
export const SLOW = Number(process.env.WALCAST_RT_SLOW || '1') // scales every timeout

// ---- checks ---------------------------------------------------------------------------------

let passed = 0
let failed = 0
let pendingSkipped = 0

// Stable JSON: object keys sorted, so that deep equality is a string comparison.
export function stable(v) {
  if (Array.isArray(v)) return '[' + v.map(stable).join(',') + ']'
  if (v && typeof v === 'object') {
    return '{' + Object.keys(v).sort().map((k) => JSON.stringify(k) + ':' + stable(v[k])).join(',') + '}'
  }
  return JSON.stringify(v === undefined ? null : v)
}

function short(s, n = 600) {
  return s.length > n ? s.slice(0, n) + '...(' + s.length + ' chars)' : s
}

// check NAME EXPECTED ACTUAL: deep equality (stable JSON).
export function check(name, expected, actual) {
  const e = stable(expected)
  const a = stable(actual)
  if (e === a) {
    passed++
    console.log(`ok - ${name}`)
    return true
  }
  failed++
  console.log(`not ok - ${name}: expected [${short(e)}], got [${short(a)}]`)
  return false
}

// checkTrue NAME COND [DETAIL]: DETAIL is printed when COND is false.
export function checkTrue(name, cond, detail = '') {
  if (cond) {
    passed++
    console.log(`ok - ${name}`)
    return true
  }
  failed++
  console.log(`not ok - ${name}${detail ? ': ' + short(String(detail)) : ''}`)
  return false
}

export function note(msg) {
  console.log(`# ${msg}`)
}

// A case of a feature that walcast does not have yet: runs only with WALCAST_RT_PENDING=1 (its
// failures then count); otherwise it is listed as pending and skipped.
export async function pending(name, why, fn) {
  if (!PENDING) {
    pendingSkipped++
    console.log(`# pending (WALCAST_RT_PENDING=1 runs it): ${name} — ${why}`)
    return
  }
  console.log(`# pending case running: ${name}`)
  await fn()
}

// Runs one case; an exception is a failed check, never the end of the whole file.
export async function testCase(name, fn) {
  console.log(`# --- ${name}`)
  try {
    await fn()
  } catch (e) {
    failed++
    console.log(`not ok - ${name}: threw ${short(String(e && e.stack ? e.stack : e), 1500)}`)
  }
}

export function summary() {
  console.log(`${passed} passed, ${failed} failed${pendingSkipped ? `, ${pendingSkipped} pending skipped` : ''}`)
  // exit now: open sockets and realtime-js's reconnect timers would keep node alive
  process.exit(failed === 0 ? 0 : 1)
}

// ---- time -------------------------------------------------------------------------------------

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// waitFor: polls COND (sync or async) every 50 ms until it is truthy; returns its value, or
// false after TIMEOUT ms (scaled by WALCAST_RT_SLOW).
export async function waitFor(cond, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs * SLOW
  for (;;) {
    const v = await cond()
    if (v) return v
    if (Date.now() >= deadline) return false
    await sleep(50)
  }
}

// ---- JWTs -------------------------------------------------------------------------------------

const b64url = (buf) => Buffer.from(buf).toString('base64url')

// jwt PAYLOAD [SECRET]: an HS256 token.
export function jwt(payload, secret = SECRET) {
  const h = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))
  const p = b64url(JSON.stringify(payload))
  const s = crypto.createHmac('sha256', secret).update(`${h}.${p}`).digest('base64url')
  return `${h}.${p}.${s}`
}

const now = () => Math.floor(Date.now() / 1000)

// userToken UID [OPTS]: an `authenticated` token of a user, valid for OPTS.ttl seconds (1 h).
export function userToken(uid, { ttl = 3600, role = 'authenticated', secret = SECRET } = {}) {
  return jwt({ sub: uid, role, aud: 'authenticated', iat: now(), exp: now() + ttl }, secret)
}

export function serviceToken({ ttl = 3600 } = {}) {
  return jwt({ role: 'service_role', iss: 'supabase', iat: now(), exp: now() + ttl })
}

// The project key a supabase-js application passes as apikey: the anon key.
export const ANON_KEY = jwt({ role: 'anon', iss: 'supabase', iat: now(), exp: now() + 86400 })

// ---- SQL --------------------------------------------------------------------------------------

const PSQL_ARGS = ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-At']

// sql TEXT: runs it as the superuser; returns psql's unaligned output (last result only when
// TEXT has several statements), trimmed.
export function sql(text) {
  return execFileSync('psql', [...PSQL_ARGS, '-c', text], { encoding: 'utf8', maxBuffer: 64 << 20 }).trim()
}

// sqlAsync TEXT: the same, without blocking the event loop (clients keep receiving meanwhile).
export async function sqlAsync(text) {
  const { stdout } = await execFileP('psql', [...PSQL_ARGS, '-c', text], { encoding: 'utf8', maxBuffer: 64 << 20 })
  return stdout.trim()
}

// script LINES: runs a psql script (several statements, one output line per row of every
// query), asynchronously; returns the output lines.
export async function script(text) {
  const child = execFile('psql', [...PSQL_ARGS, '-f', '-'], { encoding: 'utf8', maxBuffer: 256 << 20 })
  const out = new Promise((resolve, reject) => {
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`psql exited ${code}: ${stderr}`))))
  })
  child.stdin.end(text)
  return (await out).split('\n').filter((l) => l !== '')
}

export const lit = (s) => (s === null || s === undefined ? 'NULL' : `'${String(s).replace(/'/g, "''")}'`)

// The statements that make the rest of a psql session see what SUBSCRIBER may see: PostgreSQL's
// RLS through the `authenticated` role and request.jwt.claims, or service_role (bypass).
// SUBSCRIBER: {uid} or {service: true}.
export function becomeSql(sub) {
  if (sub.service) return `reset role; set request.jwt.claims = '{"role":"service_role"}'; set role service_role;`
  const claims = JSON.stringify({ sub: sub.uid, role: 'authenticated' })
  return `reset role; set request.jwt.claims = ${lit(claims)}; set role authenticated;`
}

// A query whose one output line is the JSON array of its rows.
// (jsonb_agg: json_agg puts a newline between rows)
export const jsonQuery = (q) => `select coalesce(jsonb_agg(t), '[]') from (${q}) t;`

// asUser SUBSCRIBER QUERY: the rows of QUERY as PostgreSQL shows them to SUBSCRIBER.
export async function asUser(sub, query) {
  const lines = await script(`${becomeSql(sub)}\n${jsonQuery(query)}\n`)
  return JSON.parse(lines[lines.length - 1])
}

// Encrypts a call note for events.body as walcast would decrypt it (bound to the event id).
export function encryptBody(eventId, plaintext) {
  return execFileSync(process.env.WALCAST_BIN, ['encrypt'], { input: `${eventId}\t${plaintext}\n`, encoding: 'utf8' }).trim()
}

// The PostgreSQL type name of every column of a public table (what `columns[].type` must say).
export function columnTypes(table) {
  const rows = JSON.parse(sql(jsonQuery(`select a.attname as name, t.typname as type from pg_attribute a
    join pg_type t on t.oid = a.atttypid where a.attrelid = 'public.${table}'::regclass and a.attnum > 0
    and not a.attisdropped order by a.attnum`)))
  return Object.fromEntries(rows.map((r) => [r.name, r.type]))
}

// ---- values -----------------------------------------------------------------------------------

// Microseconds since the epoch of a PostgreSQL or ISO timestamp text ("2026-12-02 10:00:00.123+00",
// "2026-12-02T10:00:00.123456+00:00", "...Z"), or null when it is not one.
export function instantMicros(s) {
  if (typeof s !== 'string') return null
  const m = /^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?(Z|[+-]\d\d(?::?\d\d)?)?$/.exec(s)
  if (!m) return null
  let off = m[4] || 'Z'
  if (off !== 'Z' && off.length === 3) off += ':00'
  if (off !== 'Z' && !off.includes(':')) off = off.slice(0, 3) + ':' + off.slice(3)
  const ms = Date.parse(`${m[1]}T${m[2]}${off}`)
  if (Number.isNaN(ms)) return null
  return BigInt(ms) * 1000n + BigInt((m[3] || '').padEnd(6, '0'))
}

// sameValue GOT WANT: values equal as PostgreSQL would compare them (numbers as numbers,
// timestamps as instants, JSON deeply).
export function sameValue(got, want) {
  if (got === want) return true
  if (got === null || want === null || got === undefined || want === undefined) return false
  if (typeof want === 'number' || typeof got === 'number') return Number(got) === Number(want)
  if (typeof want === 'string' && typeof got === 'string') {
    const a = instantMicros(got)
    const b = instantMicros(want)
    if (a !== null && b !== null) return a === b
    return false
  }
  if (typeof want === 'object' && typeof got === 'string') {
    try { return stable(JSON.parse(got)) === stable(want) } catch { return false }
  }
  return stable(got) === stable(want)
}

// diffRecord GOT WANT: the keys whose values differ ("key: got X, want Y"); [] when equal on
// exactly the same keys.
export function diffRecord(got, want) {
  const out = []
  const keys = new Set([...Object.keys(got || {}), ...Object.keys(want || {})])
  for (const k of keys) {
    if (!(k in (got || {}))) out.push(`${k}: missing, want ${JSON.stringify(want[k])}`)
    else if (!(k in (want || {}))) out.push(`${k}: extra ${JSON.stringify(got[k])}`)
    else if (!sameValue(got[k], want[k])) out.push(`${k}: got ${JSON.stringify(got[k])}, want ${JSON.stringify(want[k])}`)
  }
  return out
}

// ---- frames -----------------------------------------------------------------------------------

// The frame of either serializer as {join_ref, ref, topic, event, payload}.
export function parseFrame(text, vsn) {
  const v = JSON.parse(text)
  if (Array.isArray(v)) {
    if (vsn && vsn !== '2.0.0') throw new Error(`vsn ${vsn} got an array frame`)
    const [join_ref, ref, topic, event, payload] = v
    return { join_ref, ref, topic, event, payload, shape: 'array' }
  }
  if (vsn === '2.0.0') throw new Error('vsn 2.0.0 got an object frame')
  return { ...v, shape: 'object' }
}

export function encodeFrame(vsn, { join_ref = null, ref = null, topic, event, payload }) {
  if (vsn === '2.0.0') return JSON.stringify([join_ref, ref, topic, event, payload])
  return JSON.stringify({ topic, event, payload, ref, join_ref })
}

// A `ws` WebSocket class that records the raw text of every frame it receives into LOG (an
// array of {at, text}) before realtime-js sees it.
// Every socket it opens is also pushed to SOCKETS (a test may cut one).
function recordingTransport(log, sockets = []) {
  return class RecordingWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols)
      sockets.push(this)
      this.on('message', (data, isBinary) => {
        log.push({ at: Date.now(), text: isBinary ? null : data.toString(), binary: isBinary })
      })
    }
  }
}

// ---- realtime-js clients ------------------------------------------------------------------------

// Client: one unmodified RealtimeClient (one WebSocket), named for messages; token null means
// the apikey alone. Each channel records what realtime-js delivers to each of its bindings.
export class Client {
  // opts.options: more RealtimeClient options (accessToken, heartbeatIntervalMs, ...)
  constructor(name, { token = null, vsn = '2.0.0', apikey = ANON_KEY, path = '/realtime/v1', options = {} } = {}) {
    this.name = name
    this.vsn = vsn
    this.raw = []
    this.sockets = []
    this.client = new RealtimeClient(`${WS}${path}`, {
      params: { apikey },
      transport: recordingTransport(this.raw, this.sockets),
      vsn,
      timeout: 20000 * SLOW,
      ...options,
      // no log noise; reconnects stay on (a test that expects a close checks the raw frames)
    })
    if (token) this.client.setAuth(token)
  }

  // frames: the raw frames received so far, parsed.
  frames() {
    return this.raw.filter((r) => r.text !== null).map((r) => parseFrame(r.text, this.vsn))
  }

  // subscribe NAME BINDINGS [OPTS]: a channel with postgres_changes bindings ({event, schema,
  // table, filter}); resolves with a Channel when realtime-js reports SUBSCRIBED and the server
  // has sent "Subscribed to PostgreSQL" (opts.waitSystem false: SUBSCRIBED only); rejects on
  // CHANNEL_ERROR, TIMED_OUT or CLOSED.
  // opts.setup(channel) runs before subscribe: more listeners (broadcast, presence) on the
  // realtime-js channel.
  async subscribe(name, bindings, { waitSystem = true, config = {}, onSubscribed = null, setup = null } = {}) {
    const ch = new Channel(this, name, bindings, config)
    if (setup) setup(ch.ch)
    await ch.subscribe({ waitSystem, onSubscribed })
    return ch
  }

  // cut: the network under the current socket goes away (no close frame); realtime-js reconnects
  cut() {
    const ws = this.sockets[this.sockets.length - 1]
    if (ws && ws._socket) ws._socket.destroy()
  }

  setAuth(token) {
    return this.client.setAuth(token)
  }

  close() {
    try { this.client.disconnect() } catch { /* already closed */ }
  }
}

export class Channel {
  constructor(client, name, bindings, config) {
    this.client = client
    this.name = name
    this.topic = `realtime:${name}`
    this.bindings = bindings
    this.got = bindings.map(() => []) // per binding: the payloads realtime-js delivered
    this.statuses = []
    this.system = []
    this.ch = client.client.channel(name, { config })
    bindings.forEach((b, i) => {
      this.ch.on('postgres_changes', { ...b, schema: b.schema || 'public' }, (p) => this.got[i].push(p))
    })
    this.ch.on('system', {}, (p) => this.system.push(p))
  }

  subscribe({ waitSystem, onSubscribed }) {
    return new Promise((resolve, reject) => {
      let done = false
      this.ch.subscribe((status, err) => {
        this.statuses.push({ status, err: err ? String(err.message || err) : null, at: Date.now() })
        if (done) return
        if (status === 'SUBSCRIBED') {
          this.subscribedAt = Date.now()
          if (onSubscribed) onSubscribed(this)
          if (!waitSystem) {
            done = true
            resolve(this)
            return
          }
          waitFor(() => this.subscribedSystem(), 30000).then((ok) => {
            done = true
            if (ok) resolve(this)
            else reject(new Error(`${this.client.name}/${this.name}: SUBSCRIBED but no "Subscribed to PostgreSQL" system message`))
          })
        } else if (status !== 'SUBSCRIBED') {
          done = true
          reject(new Error(`${this.client.name}/${this.name}: ${status} ${err ? err.message || err : ''}`))
        }
      }, 20000 * SLOW)
    })
  }

  // The raw frames of this channel's topic.
  frames() {
    return this.client.frames().filter((f) => f.topic === this.topic)
  }

  subscribedSystem() {
    return this.frames().some((f) => f.event === 'system' && f.payload && f.payload.extension === 'postgres_changes' &&
      f.payload.status === 'ok' && f.payload.message === 'Subscribed to PostgreSQL')
  }

  // The raw postgres_changes pushes of this channel (payload {ids, data}).
  changes() {
    return this.frames().filter((f) => f.event === 'postgres_changes').map((f) => f.payload)
  }

  unsubscribe() {
    return this.ch.unsubscribe()
  }
}

// syncStream: returns once walcast has streamed every transaction committed before the call (a
// service_role client sees a fresh org's INSERT arrive). Setup before subscribing: a change
// committed before a join but streamed after it may legitimately reach the new subscriber, and
// a membership must be known before a join is audited for its org.
export async function syncStream() {
  const id = crypto.randomUUID()
  const c = new Client('sync', { token: serviceToken() })
  try {
    const ch = await c.subscribe(`sync-${id}`, [{ event: 'INSERT', schema: 'public', table: 'orgs', filter: `id=eq.${id}` }])
    await sqlAsync(`insert into orgs (id, name) values ('${id}', 'rt sync point')`)
    if (!(await waitFor(() => ch.got[0].length > 0, 60000))) throw new Error('syncStream: the sync point never arrived')
  } finally {
    c.close()
  }
}

// ---- raw WebSocket clients ----------------------------------------------------------------------

// rawConnect [OPTS]: a `ws` connection to the realtime endpoint; resolves {ws, frames, closed}
// once open, or {refused: {status, body, headers}} when the handshake is answered with plain HTTP.
export function rawConnect({ apikey = ANON_KEY, vsn = '2.0.0', path = '/realtime/v1/websocket', headers = {}, query = null, maxPayload } = {}) {
  const params = query !== null ? query : new URLSearchParams({ ...(apikey ? { apikey } : {}), ...(vsn ? { vsn } : {}) }).toString()
  const url = `${WS}${path}${params ? '?' + params : ''}`
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers, ...(maxPayload ? { maxPayload } : {}) })
    const conn = { ws, vsn, frames: [], texts: [], closed: null, error: null, refused: null }
    let ref = 0
    conn.send = (f) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(typeof f === 'string' ? f : encodeFrame(vsn, f))
    }
    conn.nextRef = () => String(++ref)
    // push TOPIC EVENT PAYLOAD: sends and resolves with the phx_reply of that ref (or null on timeout)
    conn.push = async (topic, event, payload, { joinRef = null, timeoutMs = 20000 } = {}) => {
      const r = conn.nextRef()
      conn.send({ join_ref: joinRef, ref: r, topic, event, payload })
      return waitFor(() => conn.frames.find((f) => f.ref === r && f.event === 'phx_reply') || (conn.closed && 'closed'), timeoutMs)
    }
    ws.on('message', (data, isBinary) => {
      const text = data.toString()
      conn.texts.push(text)
      if (!isBinary) {
        try { conn.frames.push(parseFrame(text)) } catch { conn.frames.push({ unparsable: text }) }
      }
    })
    ws.on('close', (code, reason) => { conn.closed = { code, reason: reason.toString(), at: Date.now() } })
    ws.on('error', (e) => { conn.error = String(e.message || e) })
    ws.on('open', () => resolve(conn))
    ws.on('unexpected-response', (req, res) => {
      let body = ''
      res.on('data', (d) => (body += d))
      res.on('end', () => {
        conn.refused = { status: res.statusCode, body, headers: res.headers }
        resolve(conn)
      })
    })
    ws.on('error', () => { if (ws.readyState !== WebSocket.OPEN && !conn.refused) setTimeout(() => resolve(conn), 500) })
  })
}

// rawJoin CONN TOPIC BINDINGS [TOKEN]: a phx_join as realtime-js sends it; resolves with the reply frame.
export function rawJoin(conn, topic, bindings, token = null, extra = {}) {
  const payload = {
    config: { broadcast: { ack: false, self: false }, presence: { key: '', enabled: false }, postgres_changes: bindings, private: false, ...extra },
    ...(token ? { access_token: token } : {}),
  }
  return conn.push(topic, 'phx_join', payload, { joinRef: conn.nextRef() })
}

// ---- resuming clients (docs/protocol.md, "Resume"; lb, edge and lb_edges tests) ------------------

// resumingClient NAME TOKEN TOPIC BINDINGS [OPTIONS]: a Client whose channel TOPIC's join config
// always holds the last walcast_position it received (a decode wrapper, as docs/protocol.md
// shows), so realtime-js's own rejoin resumes from there. OPTIONS: more RealtimeClient options,
// or a function of a getter of the Client returning them (a transport that records into it).
// Resolves {c, ch, opts} once subscribed; opts.walcast_resume_from is that position.
export async function resumingClient(name, token, topic, bindings, options = {}) {
  const opts = { walcast_resume_from: null }
  const c = new Client(name, {
    token,
    options: {
      ...(typeof options === 'function' ? options(() => c) : options),
      decode: (raw, cb) => c.client.serializer.decode(raw, (msg) => {
        if (msg.event === 'postgres_changes' && msg.payload && msg.payload.walcast_position) opts.walcast_resume_from = msg.payload.walcast_position
        cb(msg)
      }),
    },
  })
  const ch = await c.subscribe(topic, bindings, { config: { postgres_changes_options: opts } })
  return { c, ch, opts }
}

// (each frame parsed once: tests poll these while thousands arrive)
const rawTexts = (c) => c.raw.filter((r) => r.text !== null).map((r) => ({ at: r.at, f: (r.parsed ||= JSON.parse(r.text)) }))
// statusChanges CLIENT CHANNEL PREFIX: the raw postgres_changes pushes (v2 frames) of CHANNEL whose
// record's status starts with PREFIX, with their arrival time: {at, status, id, position, record}
export const statusChanges = (c, ch, prefix) => rawTexts(c)
  .filter(({ f }) => f[2] === ch.topic && f[3] === 'postgres_changes' && f[4].data.record && String(f[4].data.record.status).startsWith(prefix))
  .map(({ at, f }) => ({ at, status: f[4].data.record.status, id: f[4].data.record.id, position: f[4].walcast_position, record: f[4].data.record }))
// statusInserts CHANNEL PREFIX: the INSERTs realtime-js handed the application whose status starts with PREFIX
export const statusInserts = (ch, prefix) => ch.got[0].filter((q) => q.eventType === 'INSERT' && String(q.new.status).startsWith(prefix))
// resumeAnswers CLIENT CHANNEL: the walcast_resume system messages of CHANNEL: {at, status, message}
export const resumeAnswers = (c, ch) => rawTexts(c)
  .filter(({ f }) => f[2] === ch.topic && f[3] === 'system' && f[4].extension === 'walcast_resume')
  .map(({ at, f }) => ({ at, status: f[4].status, message: f[4].message }))
export const RESUME_GAP = 'Resume gap: the replay buffer no longer reaches back to that position: refetch'
// the values that occur more than once in LIST
export const dups = (list) => list.filter((v, i) => list.indexOf(v) !== i)

// the same for a client record X ({c, ch}, as resumingClient and edgeClient resolve)
export const edgeWire = (x, prefix) => statusChanges(x.c, x.ch, prefix)
export const edgeDelivered = (x, prefix) => statusInserts(x.ch, prefix)
export const edgeResumes = (x) => resumeAnswers(x.c, x.ch)

// checkFeeds CLIENTS WANT PREFIX LABEL: each client's events whose status starts with PREFIX are
// exactly WANT[its user] (the masking view's rows, in commit order), each record the view's row.
export function checkFeeds(clients, want, prefix, label) {
  for (const x of clients) {
    const got = edgeWire(x, prefix)
    check(`${label}, ${x.name}: exactly the events RLS shows ${x.user}, in commit order`, want[x.user].map((r) => r.status), got.map((w) => w.status))
    const diffs = got.flatMap((w) => {
      const r = want[x.user].find((o) => o.id === w.id)
      return r ? diffRecord(w.record, r).map((d) => `${w.status}: ${d}`) : []
    })
    check(`${label}, ${x.name}: each record is the masking view's row`, [], diffs.slice(0, 5))
  }
}

// ---- clients of several edges (a load balancer's part played by the test) -----------------------

// edgeTransport ROUTE OWNER: a `ws` WebSocket class that connects to the edge ROUTE() names (a
// base http://HOST:PORT) at each (re)connect, recording every frame into OWNER()'s raw log and
// sockets like Client's own transport — while the socket is open, as a browser does: a socket
// realtime-js closed (a heartbeat timeout) may still receive what its edge had queued, once the
// network is back. A handshake that does not complete within 3 s fails (a host cut off answers
// nothing), so realtime-js reconnects and ROUTE is asked again.
export function edgeTransport(route, owner) {
  return class EdgeWebSocket extends WebSocket {
    constructor(url, protocols) {
      const u = new URL(url)
      u.host = new URL(route()).host
      super(u.toString(), protocols, { handshakeTimeout: 3000 * SLOW })
      const c = owner()
      c.sockets.push(this)
      this.on('message', (data, isBinary) => {
        if (this.readyState === WebSocket.OPEN) c.raw.push({ at: Date.now(), text: isBinary ? null : data.toString(), binary: isBinary })
      })
    }
  }
}

// edgeClient {name, user, uid, home, route, bindings, options}: a resumingClient of user UID on
// topic edge-NAME, connected through edgeTransport(ROUTE). Resolves {name, user, uid, home, c, ch,
// opts} once subscribed.
export async function edgeClient({ name, user, uid, home, route, bindings, options = {} }) {
  const r = await resumingClient(name, userToken(uid), `edge-${name}`, bindings, (client) => ({ ...options, transport: edgeTransport(route, client) }))
  return { name, user, uid, home, ...r }
}

// threeOrgs PREFIX ROLES: commits orgs X, Y and Z ('PREFIX x', ...), their contacts (X: a public
// one and a private one whose events only admins and above see; Y, Z: one each) and one member
// per entry of ROLES ({name: [org letter, role]}). Returns {X, Y, Z, CX: {pub, priv}, CY, CZ,
// U: {name: uid}, BUSY: the [org, contact] targets of X and Y, ALL: BUSY and Z's}.
export function threeOrgs(prefix, roles) {
  const o = { X: crypto.randomUUID(), Y: crypto.randomUUID(), Z: crypto.randomUUID() }
  const CX = { pub: crypto.randomUUID(), priv: crypto.randomUUID() }
  const CY = crypto.randomUUID()
  const CZ = crypto.randomUUID()
  const U = Object.fromEntries(Object.keys(roles).map((name) => [name, crypto.randomUUID()]))
  sql(`insert into orgs (id, name) values (${lit(o.X)}, '${prefix} x'), (${lit(o.Y)}, '${prefix} y'), (${lit(o.Z)}, '${prefix} z');
     insert into org_roles (org_id, user_id, role) values
       ${Object.entries(roles).map(([name, [org, role]]) => `(${lit(o[org])}, ${lit(U[name])}, ${lit(role)})`).join(', ')};
     insert into contacts (id, org_id, name, phone) values (${lit(CX.pub)}, ${lit(o.X)}, 'Public', '+15550001234'),
       (${lit(CX.priv)}, ${lit(o.X)}, 'Private', '+15550009876'), (${lit(CY)}, ${lit(o.Y)}, 'Other', '+15550005555'),
       (${lit(CZ)}, ${lit(o.Z)}, 'Quiet', '+15550007777');
     insert into privacy_rules (org_id, contact_id, min_role) values (${lit(o.X)}, ${lit(CX.priv)}, 'admin')`)
  const BUSY = [[o.X, CX.pub], [o.X, CX.priv], [o.Y, CY], [o.X, CX.pub], [o.Y, CY]]
  return { ...o, CX, CY, CZ, U, BUSY, ALL: [...BUSY, [o.Z, CZ]] }
}
// statusEvent PREFIX P N TARGETS: the insert of phase P's N-th event, one per transaction, into
// the [org, contact] of TARGETS in turn; its status PREFIX-P-NNNNN orders them
export function statusEvent(prefix, p, n, targets) {
  const [org, contact] = targets[n % targets.length]
  return `insert into events (org_id, contact_id, kind, direction, status, from_number, to_number)
    values (${lit(org)}, ${lit(contact)}, 'call', 'inbound', ${lit(`${prefix}-${p}-${String(n).padStart(5, '0')}`)}, '+33612345678', '+15551112222')`
}
// statusOracle UID PREFIX: what PostgreSQL's masking view shows UID of the events whose status
// starts with PREFIX, in commit order (a promise)
export const statusOracle = (uid, prefix) =>
  asUser({ uid }, `select * from walcast.events_masked where status like ${lit(`${prefix}%`)} order by status`)

// ---- the daemon ---------------------------------------------------------------------------------

export async function healthz() {
  try {
    const r = await fetch(`${HTTP}/healthz`, { signal: AbortSignal.timeout(5000) })
    return r.status === 200
  } catch {
    return false
  }
}

// metric NAME [BASE]: the sum of the /metrics samples of NAME (every label set) of the daemon at
// BASE (http://HOST:PORT; default the one under test), or null.
export async function metric(name, base = HTTP) {
  try {
    const text = await (await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(5000) })).text()
    let sum = null
    for (const line of text.split('\n')) {
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line)
      if (m && m[1] === name) sum = (sum || 0) + Number(m[3])
    }
    return sum
  } catch {
    return null
  }
}

// The daemon's resident memory in KiB (VmRSS), or null.
export function daemonRssKiB() {
  try {
    const s = fs.readFileSync(`/proc/${process.env.WALCAST_PID}/status`, 'utf8')
    return Number(/VmRSS:\s+(\d+)/.exec(s)[1])
  } catch {
    return null
  }
}

export function daemonAlive() {
  try { process.kill(Number(process.env.WALCAST_PID), 0); return true } catch { return false }
}
