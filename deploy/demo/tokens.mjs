// tokens.mjs — the demo's sign-in stand-in (deploy/demo.sh): reads the seeded members
// ("org_id user_id role" lines from traffic.sh --print-users) on stdin and writes users.json for
// the dashboard page: the anon key and, for one org, the first user of each role with an HS256
// JWT minted with the demo's secret (WALCAST_AUTH_JWT_SECRET), valid for 12 hours.
//
// DEMO ONLY: serving tokens to whoever loads the page is exactly what a real deployment must
// never do (tokens come from the platform's own sign-in); the demo listens on 127.0.0.1 only.
//
//   node tokens.mjs < users.txt > users.json
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
  })
}
const anon = jwt({ role: 'anon', iss: 'supabase', iat: now, exp: now + ttl })
process.stdout.write(JSON.stringify({ note: 'demo only: tokens minted with the demo secret', org, anon, users }, null, 2) + '\n')
