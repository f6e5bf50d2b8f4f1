// charts.js — the demo dashboard's live charts of the stats API (docs/api.md), one set per pane,
// read with that pane's user's token, so the two users' differences show: calls and SMS per hour
// and missed calls per hour over the last 48 hours (/hours, the org's totals: every member
// reads them), and today's top contacts (/contacts: analysts and above, privacy rules applied).
// A refusal of the API is drawn as such ("not visible to viewer", with the API's status and
// message), never hidden. Plain SVG written by hand; no chart library.
//
// Every number drawn is also in the DOM for tests (tests/demo/dashboard.test.mjs):
//   #hours-SIDE    data-state (ok|refused|error), data-fetched (ms since 1970 when the request
//                  left), data-calls/-sms/-missed (48 h totals); one g.hour per hour with
//                  data-hour ("2026-12-02T07:00:00Z"), data-calls, data-sms, data-missed
//   #missed-SIDE   the same hours' missed calls (g.hour data-hour data-missed)
//   #contacts-SIDE data-state, data-fetched, data-day, data-status (the API's HTTP status);
//                  li[data-contact][data-events] in the API's order, or .refused's text
export const REFRESH_MS = 1500
const HOURS = 48
const TOP = 10
const SVG = 'http://www.w3.org/2000/svg'
const W = 480
const H = 90
const PAD_LEFT = 34
const PAD_BOTTOM = 14

function el(tag, attrs = {}, text = null) {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v)
  if (text !== null) e.textContent = text
  return e
}

function svg(tag, attrs = {}, text = null) {
  const e = document.createElementNS(SVG, tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v))
  if (text !== null) e.textContent = text
  return e
}

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0)
const today = () => new Date().toISOString().slice(0, 10)

// GET the stats API as the user: {status, body} (body: parsed JSON, or {error: text}).
async function api(path, token) {
  const r = await fetch(`/api/v1/stats${path}`, { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' })
  const text = await r.text()
  let body
  try {
    body = JSON.parse(text)
  } catch (e) {
    body = { error: text.slice(0, 200) || `HTTP ${r.status}` }
  }
  return { status: r.status, body }
}

// A bar chart of hours: SERIES is [[field, css class], ...], stacked bottom up.
function hourBars(hours, series) {
  const box = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'bars' })
  const plotW = W - PAD_LEFT
  const plotH = H - PAD_BOTTOM
  const max = Math.max(1, ...hours.map((h) => series.reduce((s, [f]) => s + num(h[f]), 0)))
  const bw = plotW / Math.max(hours.length, 1)
  box.append(svg('text', { x: PAD_LEFT - 4, y: 9, class: 'axis', 'text-anchor': 'end' }, String(max)))
  box.append(svg('text', { x: PAD_LEFT - 4, y: plotH, class: 'axis', 'text-anchor': 'end' }, '0'))
  box.append(svg('line', { x1: PAD_LEFT, y1: plotH + 0.5, x2: W, y2: plotH + 0.5, class: 'base' }))
  hours.forEach((h, i) => {
    const g = svg('g', { class: 'hour', 'data-hour': h.hour })
    const x = PAD_LEFT + i * bw
    let y = plotH
    const tip = [h.hour]
    for (const [field, cls] of series) {
      const v = num(h[field])
      g.setAttribute(`data-${field}`, String(v))
      tip.push(`${field} ${v}`)
      const bh = (v / max) * (plotH - 2)
      if (v > 0) g.append(svg('rect', { x: x + 0.5, y: y - bh, width: Math.max(bw - 1, 1), height: bh, class: cls }))
      y -= bh
    }
    g.append(svg('title', {}, tip.join(', ')))
    box.append(g)
    // an hour label every 12 hours, and on the current (last) hour
    if (i % 12 === 0 || i === hours.length - 1) {
      box.append(svg('text', { x: x + bw / 2, y: H - 2, class: 'axis', 'text-anchor': i === hours.length - 1 ? 'end' : 'middle' },
        i === hours.length - 1 ? 'now' : `${h.hour.slice(11, 13)}h`))
    }
  })
  return box
}

// "not visible to ROLE" for a refusal (403: the role may not; 404: not a member of the org),
// the error for anything else. Returns the state.
function refusal(box, res, role) {
  const refused = res.status === 403 || res.status === 404
  const why = res.body && res.body.error ? res.body.error : `HTTP ${res.status}`
  box.append(el('div', { class: refused ? 'refused' : 'error' },
    refused ? `not visible to ${role} (stats API ${res.status}: ${why})` : `stats API error ${res.status}: ${why}`))
  return refused ? 'refused' : 'error'
}

export class StatsCharts {
  constructor(side) {
    this.side = side
    this.user = null
    this.role = () => ''
    this.gen = 0
    this.timer = null
    this.root = el('div', { class: 'charts', id: `charts-${side}` })
    this.hours = el('div', { class: 'chart', id: `hours-${side}` })
    this.missed = el('div', { class: 'chart', id: `missed-${side}` })
    this.contacts = el('div', { class: 'chart contacts', id: `contacts-${side}` })
    this.root.append(this.hours, this.missed, this.contacts)
  }

  // Charts of USER (from users.json); ROLE() is the user's role as the pane last saw it.
  setUser(user, role) {
    this.user = user
    this.role = role
    this.gen++
    for (const b of [this.hours, this.missed, this.contacts]) {
      b.replaceChildren(el('div', { class: 'loading' }, 'loading…'))
      b.dataset.state = 'loading'
      delete b.dataset.fetched
    }
    clearTimeout(this.timer)
    this.tick(this.gen)
  }

  async tick(gen) {
    try {
      await this.refresh(gen)
    } catch (e) {
      if (gen === this.gen) {
        this.hours.replaceChildren(el('div', { class: 'error' }, `charts failed: ${e}`))
        this.hours.dataset.state = 'error'
      }
    }
    if (gen === this.gen) this.timer = setTimeout(() => this.tick(gen), REFRESH_MS)
  }

  async refresh(gen) {
    const u = this.user
    const org = encodeURIComponent(u.org)
    const day = today()
    const fetched = Date.now()
    const [hours, contacts] = await Promise.all([
      api(`/orgs/${org}/hours?hours=${HOURS}`, u.token).catch((e) => ({ status: 0, body: { error: String(e) } })),
      api(`/orgs/${org}/contacts?day=${day}&limit=${TOP}`, u.token).catch((e) => ({ status: 0, body: { error: String(e) } })),
    ])
    if (gen !== this.gen) return // the pane changed user meanwhile
    this.drawHours(hours, fetched)
    this.drawContacts(contacts, fetched, day)
  }

  drawHours(res, fetched) {
    const role = this.role()
    const head = (box, title) => {
      box.replaceChildren(el('h3', {}, title))
      box.dataset.fetched = String(fetched)
      box.dataset.status = String(res.status)
    }
    head(this.hours, 'calls and SMS per hour, last 48 h (UTC)')
    head(this.missed, 'missed calls per hour')
    if (res.status !== 200 || !Array.isArray(res.body.hours)) {
      this.hours.dataset.state = refusal(this.hours, res, role)
      this.missed.dataset.state = refusal(this.missed, res, role)
      return
    }
    const hours = res.body.hours
    const sum = (f) => hours.reduce((s, h) => s + num(h[f]), 0)
    const last = hours[hours.length - 1] || {}
    this.hours.append(hourBars(hours, [['calls', 'calls'], ['sms', 'sms']]),
      el('p', { class: 'totals' },
        `48 h: ${sum('calls')} calls, ${sum('sms')} SMS · this hour: ${num(last.calls)} calls, ${num(last.sms)} SMS`))
    this.missed.append(hourBars(hours, [['missed', 'missed']]),
      el('p', { class: 'totals' }, `48 h: ${sum('missed')} missed calls · this hour: ${num(last.missed)}`))
    for (const [box, fields] of [[this.hours, ['calls', 'sms', 'missed']], [this.missed, ['missed']]]) {
      for (const f of fields) box.dataset[f] = String(sum(f))
      box.dataset.state = 'ok'
    }
  }

  drawContacts(res, fetched, day) {
    const box = this.contacts
    box.replaceChildren(el('h3', {}, `top contacts today (${day}, UTC)`))
    box.dataset.fetched = String(fetched)
    box.dataset.day = day
    box.dataset.status = String(res.status)
    if (res.status !== 200 || !Array.isArray(res.body.contacts)) {
      box.dataset.state = refusal(box, res, this.role())
      return
    }
    const list = res.body.contacts
    const max = Math.max(1, ...list.map((c) => num(c.events)))
    const ol = el('ol')
    for (const c of list) {
      const li = el('li', { 'data-contact': c.contact, 'data-events': String(num(c.events)), title: c.contact })
      const bar = el('span', { class: 'hbar' })
      bar.style.width = `${(num(c.events) / max) * 100}%`
      li.append(el('code', {}, c.contact.slice(0, 8)), el('span', { class: 'track' }), el('span', { class: 'n' }, String(num(c.events))))
      li.children[1].append(bar)
      ol.append(li)
    }
    box.append(list.length ? ol : el('div', { class: 'empty' }, 'no events with a contact today'))
    box.dataset.state = 'ok'
  }
}
