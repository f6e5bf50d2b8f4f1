// app.js — the demo dashboard's logic (deploy/demo/web/index.html; bundled by esbuild with
// @supabase/realtime-js at demo start). Two panes, each signed in as one demo user (tokens from
// users.json, minted by deploy/demo/tokens.mjs: demo only) through the unmodified realtime-js
// client on walcast's realtime sink (ws://HOST/realtime/v1), subscribed to postgres_changes of
// public.events and public.org_roles; each shows that user's live feed exactly as walcast
// delivers it (masked or absent fields included). The header polls /readyz and /metrics for
// walcast's health and replication lag. Under each pane's header, live charts of the stats API
// read with that pane's user's token (charts.js): calls, SMS and missed calls per hour, and
// today's top contacts as the user's role allows.
//
// The page's URL picks the users: ?left=owner&right=viewer (defaults: users.json's "defaults",
// the users whose roles the demo's generator leaves alone). Every row carries data-* attributes
// with the raw values so tests (tests/demo/dashboard.test.mjs) can read them.
import { RealtimeClient } from '@supabase/realtime-js'
import { StatsCharts } from './charts.js'

const MAX_ROWS = 50
const COLUMNS = ['action', 'kind', 'direction', 'status', 'from_number', 'to_number', 'body']

function el(tag, attrs = {}, text = null) {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v)
  if (text !== null) e.textContent = text
  return e
}

function show(v) {
  if (v === undefined) return { text: '(absent)', masked: true }
  if (v === null) return { text: 'null', masked: true }
  return { text: typeof v === 'string' ? v : JSON.stringify(v), masked: false }
}

class Pane {
  constructor(root, side, cfg, user) {
    this.root = root
    this.side = side
    this.cfg = cfg
    this.client = null
    this.root.replaceChildren()
    const h = el('h2')
    this.select = el('select', { id: `user-${side}` })
    for (const u of cfg.users) {
      const o = el('option', { value: u.name }, `${u.name} (${u.uid.slice(0, 8)})`)
      this.select.append(o)
    }
    this.select.addEventListener('change', () => this.signIn(this.select.value))
    this.status = el('span', { class: 'status', id: `status-${side}` }, 'connecting')
    // the user's role in the org as the feed last reported it (org_roles changes reach the
    // user at their commit: a demotion shows here and the rows after it are masked accordingly)
    this.roleBadge = el('span', { class: 'rolebadge', id: `role-${side}` })
    h.append(el('span', {}, side === 'left' ? 'User' : 'Second user'), this.select, this.roleBadge, this.status)
    this.charts = new StatsCharts(side)
    this.table = el('table', { id: `feed-${side}` })
    const head = el('tr')
    head.append(el('th', {}, 'table'))
    for (const c of COLUMNS) head.append(el('th', {}, c))
    this.table.append(head)
    this.root.append(h, this.charts.root, this.table)
    this.signIn(user)
  }

  signIn(name) {
    const u = this.cfg.users.find((x) => x.name === name) || this.cfg.users[0]
    this.select.value = u.name
    this.root.dataset.user = u.name
    this.root.dataset.uid = u.uid
    this.user = u
    this.role = u.role // as the feed last reported it (the charts' "not visible to ROLE")
    this.setRole(`seeded as ${u.role}${u.steady ? ' (kept by the generator)' : ''}`, false)
    this.charts.setUser(u, () => this.role)
    if (this.client) this.client.disconnect()
    while (this.table.rows.length > 1) this.table.deleteRow(1)
    this.setStatus('connecting')
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/realtime/v1`
    this.client = new RealtimeClient(url, { params: { apikey: this.cfg.anon } })
    this.client.setAuth(u.token)
    const ch = this.client.channel(`demo-${this.side}`)
    for (const table of ['events', 'org_roles']) {
      ch.on('postgres_changes', { event: '*', schema: 'public', table }, (p) => this.add(p))
    }
    ch.subscribe((status, err) => this.setStatus(err ? `${status}: ${err.message || err}` : status))
  }

  setRole(text, changed) {
    this.roleBadge.textContent = text
    this.roleBadge.classList.toggle('changed', changed)
  }

  setStatus(s) {
    this.status.textContent = s
    this.root.dataset.status = s
  }

  add(p) {
    const row = p.eventType === 'DELETE' ? p.old : p.new
    const tr = el('tr', { class: p.table === 'org_roles' ? 'role' : 'event' })
    tr.dataset.table = p.table
    tr.dataset.action = p.eventType
    tr.dataset.row = JSON.stringify(row || {})
    if (p.table === 'org_roles' && row && row.user_id === this.user.uid && row.org_id === this.user.org) {
      tr.classList.add('mine')
      this.role = p.eventType === 'DELETE' ? 'a user removed from the org' : row.role
      this.setRole(p.eventType === 'DELETE' ? 'removed from the org' : `now ${row.role}`, true)
    }
    tr.append(el('td', {}, p.table))
    for (const c of COLUMNS) {
      let v
      if (c === 'action') v = p.eventType
      else if (p.table === 'org_roles' && c === 'kind') v = `${row.role} ${row.user_id ? row.user_id.slice(0, 8) : ''}`
      else if (p.table === 'org_roles') v = ''
      else v = row ? row[c] : undefined
      const s = show(v)
      tr.append(el('td', { class: s.masked ? 'masked' : '', title: s.text }, s.text))
    }
    this.table.rows.length > 1 ? this.table.rows[1].before(tr) : this.table.append(tr)
    while (this.table.rows.length > MAX_ROWS + 1) this.table.deleteRow(this.table.rows.length - 1)
  }
}

// walcast's health: /readyz's verdict and the replication lag from /metrics.
async function pollHealth(box) {
  const parts = []
  try {
    const r = await fetch('/readyz', { cache: 'no-store' })
    const j = await r.json()
    parts.push(el('span', { class: r.ok ? 'good' : 'bad', id: 'ready' }, r.ok ? 'ready' : 'not ready: ' + (j.reasons || []).join(', ')))
  } catch (e) {
    parts.push(el('span', { class: 'bad', id: 'ready' }, 'walcast unreachable'))
  }
  try {
    const text = await (await fetch('/metrics', { cache: 'no-store' })).text()
    for (const [name, label, unit] of [
      ['walcast_replication_lag_seconds', 'lag', 's'],
      ['walcast_replication_lag_bytes', 'lag', ' bytes'],
    ]) {
      const m = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, 'm'))
      if (m) parts.push(el('span', { class: 'lag' }, `${label} ${Number(m[1]).toFixed(unit === 's' ? 2 : 0)}${unit}`))
    }
  } catch (e) {
    /* /metrics is optional */
  }
  box.replaceChildren('walcast: ')
  parts.forEach((p, i) => box.append(...(i ? [' · ', p] : [p])))
  box.dataset.updated = String(Date.now())
}

async function main() {
  const cfg = await (await fetch('users.json', { cache: 'no-store' })).json()
  const q = new URLSearchParams(location.search)
  const defaults = cfg.defaults || { left: 'owner', right: 'viewer' }
  window.demo = {
    left: new Pane(document.getElementById('pane-left'), 'left', cfg, q.get('left') || defaults.left),
    right: new Pane(document.getElementById('pane-right'), 'right', cfg, q.get('right') || defaults.right),
  }
  const steady = cfg.users.filter((u) => u.steady).map((u) => u.name)
  document.getElementById('steady').textContent = steady.length
    ? `The traffic generator leaves the roles of ${steady.join(' and ')} alone (traffic.sh --keep-roles), so the default panes ` +
      'never race a promotion; the other users are promoted, demoted and removed now and then (pick them to watch it).'
    : 'The traffic generator may change any user\'s role now and then.'
  const box = document.getElementById('health')
  pollHealth(box)
  setInterval(() => pollHealth(box), 2000)
}

main().catch((e) => {
  document.getElementById('health').textContent = `demo failed to start: ${e}`
})
