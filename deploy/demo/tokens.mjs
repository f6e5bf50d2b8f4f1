// tokens.mjs — the demo's sign-in stand-in (deploy/demo.sh): reads the seeded members
// ("org_id user_id role" lines from traffic.sh --print-users) on stdin and writes users.json for
// the dashboard page: the anon key and, for one org, the first user of each role with an HS256
// JWT minted with the demo's secret (WALCAST_AUTH_JWT_SECRET), valid for 12 hours.
// --defaults LEFT,RIGHT names the roles the page shows by default (default owner,viewer); those
// users are marked "steady": deploy/demo.sh passes their ids to traffic.sh --keep-roles, so the
// generator's role changes never hit the panes' default users, and the page says so.
//
// DEMO ONLY: serving tokens to whoever loads the page is exactly what a real deployment must
// never do (tokens come from the platform's own sign-in); the demo listens on 127.0.0.1 only.
//
//   node tokens.mjs [--defaults owner,viewer] < users.txt > users.json
import crypto from 'node:crypto'
import fs from 'node:fs'

const secret = process.env.WALCAST_AUTH_JWT_SECRET || ''
if (secret.length < 32) {
  console.error('tokens: WALCAST_AUTH_JWT_SECRET must be set (32+ characters)')
  process.exit(2)
}
const b64 = (s) => Buffer.from(s).toString('base64url')
const jwt = (payload) => {
  const head = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' })) + '.' + b64(JSON.stringify(payload))
  return head + '.' + crypto.createHmac('sha256', secret).update(head).digest('base64url')
}
const args = process.argv.slice(2)
const defaultsArg = args[0] === '--defaults' ? args[1] || '' : args.length === 0 ? 'owner,viewer' : null
const defaults = defaultsArg === null ? [] : defaultsArg.split(',')
if (defaults.length !== 2) {
  console.error('tokens: usage: node tokens.mjs [--defaults LEFT,RIGHT] < users.txt > users.json')
  process.exit(2)
}
const now = Math.floor(Date.now() / 1000)
const ttl = 12 * 3600

const rows = fs.readFileSync(0, 'utf8').split('\n').map((l) => l.trim().split(/\s+/)).filter((r) => r.length === 3)
if (rows.length === 0) {
  console.error('tokens: no "org_id user_id role" lines on stdin')
  process.exit(2)
}
const org = rows[0][0]
const order = ['owner', 'admin', 'analyst', 'member', 'viewer']
const users = []
for (const role of order) {
  const r = rows.find((x) => x[0] === org && x[2] === role)
  if (!r) continue
  users.push({
    name: role,
    role,
    uid: r[1],
    org,
    token: jwt({ sub: r[1], role: 'authenticated', aud: 'authenticated', iat: now, exp: now + ttl }),
    steady: defaults.includes(role),
  })
}
for (const role of defaults) {
  if (!users.some((u) => u.name === role)) {
    console.error(`tokens: --defaults: no ${role} in org ${org}`)
    process.exit(2)
  }
}
const anon = jwt({ role: 'anon', iss: 'supabase', iat: now, exp: now + ttl })
process.stdout.write(JSON.stringify({ note: 'demo only: tokens minted with the demo secret', org, anon, defaults: { left: defaults[0], right: defaults[1] }, users }, null, 2) + '\n')
