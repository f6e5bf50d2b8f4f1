#!/usr/bin/env bash
# Traffic generator for the walcast demo, benchmarks and tests: seeds a Call/SMS platform
# (orgs, users holding every role in every org, contacts, some with privacy rules), then writes
# a stream of events (calls and SMS) mixed with status updates, deletions, role changes
# (promotions, demotions, removals, re-adds), privacy rule changes, contact edits, audit_log and
# sync_health rows, one transaction per change, at a chosen rate, and exits.
#
#   traffic.sh [--orgs N] [--users N] [--contacts N] [--events N] [--rate PER_SEC] [--seed S]
#              [--keep-roles UID[,UID...]]
#   traffic.sh --print-users [--orgs N] [--users N] [--contacts N] [--seed S]
#
# Connects with psql and the usual PG* environment (a role that may write the platform tables:
# a superuser, the table owner or service_role's login). Everything it does is decided by an
# awk program seeded with S, so a given seed always produces the same ids, rows and changes;
# only timestamps differ. The SQL flows through one psql process; psql reports progress back
# (\warn lines) and this script prints one summary line per second to stderr.
#
# --print-users seeds (idempotently: rows that exist are left alone) and prints one
# "org_id user_id role" line per member of the seeded orgs, then exits; run the traffic with
# the same --seed/--orgs/--users/--contacts afterwards and it reuses those orgs and users.
#
# --keep-roles leaves those users' roles alone (ids from --print-users): the role changes pick
# among the other users. The demo keeps the users its page shows by default, so that what a
# pane shows is never raced by a promotion (a viewer stays a viewer); tests use it likewise.
set -euo pipefail

usage() {
  sed -n '/^#   traffic.sh/s/^#   //p' "$0" >&2
  echo "defaults: --orgs 3 --users 10 --contacts 20 --events 1000 --rate 100 --seed 1 (--rate 0: as fast as possible)" >&2
}

ORGS=3 USERS=10 CONTACTS=20 EVENTS=1000 RATE=100 SEED=1 PRINT_USERS=0 KEEP_ROLES=
while [ $# -gt 0 ]; do
  case "$1" in
    --orgs) ORGS=${2-}; shift 2 ;;
    --users) USERS=${2-}; shift 2 ;;
    --contacts) CONTACTS=${2-}; shift 2 ;;
    --events) EVENTS=${2-}; shift 2 ;;
    --rate) RATE=${2-}; shift 2 ;;
    --seed) SEED=${2-}; shift 2 ;;
    --keep-roles) KEEP_ROLES=${2-}; shift 2 ;;
    --print-users) PRINT_USERS=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "traffic: unknown argument '$1'" >&2; usage; exit 2 ;;
  esac
done
for v in ORGS USERS CONTACTS EVENTS RATE SEED; do
  if ! [[ ${!v} =~ ^[0-9]+$ ]]; then
    echo "traffic: --${v,,} needs a non-negative integer, got '${!v}'" >&2; exit 2
  fi
done
UUID_RE='[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
if [ -n "$KEEP_ROLES" ] && ! [[ $KEEP_ROLES =~ ^$UUID_RE(,$UUID_RE)*$ ]]; then
  echo "traffic: --keep-roles needs user ids (lower-case uuids) separated by commas, got '$KEEP_ROLES'" >&2; exit 2
fi
if [ "$ORGS" -lt 1 ] || [ "$USERS" -lt 5 ] || [ "$CONTACTS" -lt 1 ]; then
  echo "traffic: need --orgs >= 1, --users >= 5 (one per role), --contacts >= 1" >&2; exit 2
fi

PSQL=(psql -X -q -v ON_ERROR_STOP=1)

# Message bodies are encrypted with `walcast encrypt` when it and a keyring are available
# (WALCAST_BIN or walcast on PATH; keys in WALCAST_KEYS_FILE or WALCAST_KEYS); otherwise NULL.
WALCAST_BIN=${WALCAST_BIN:-$(command -v walcast || true)}
BODIES=0
if [ -n "$WALCAST_BIN" ] && { [ -n "${WALCAST_KEYS_FILE:-}" ] || [ -n "${WALCAST_KEYS:-}" ]; }; then
  BODIES=1
fi

# Replaces each __BODY__ID|TEXT__END__ placeholder with the ciphertext walcast makes for TEXT,
# bound to ID. One `walcast encrypt` process serves the whole run.
encrypt_bodies() {
  if [ "$BODIES" = 0 ]; then cat; return; fi
  local line pre rest payload post hex
  coproc ENC { "$WALCAST_BIN" encrypt; }
  while IFS= read -r line; do
    if [[ $line == *__BODY__* ]]; then
      pre=${line%%__BODY__*}; rest=${line#*__BODY__}
      payload=${rest%%__END__*}; post=${rest#*__END__}
      printf '%s\t%s\n' "${payload%%|*}" "${payload#*|}" >&"${ENC[1]}"
      IFS= read -r hex <&"${ENC[0]}" || { echo "traffic: walcast encrypt failed" >&2; return 1; }
      printf "%s'%s'::bytea%s\n" "$pre" "$hex" "$post"
    else
      printf '%s\n' "$line"
    fi
  done
}
if ! "${PSQL[@]}" -At -c "select 'public.events'::regclass" >/dev/null; then
  echo "traffic: cannot reach the platform tables (are PG* set and the migrations applied?)" >&2
  exit 1
fi

# The generator. Emits SQL for psql on stdout; progress markers are psql \warn commands, which
# psql prints to its stderr once it has executed everything before them.
generate() {
  LC_ALL=C awk -v seed="$SEED" -v norgs="$ORGS" -v nusers="$USERS" -v ncontacts="$CONTACTS" \
    -v nevents="$EVENTS" -v rate="$RATE" -v seedonly="$1" -v bodies="$BODIES" -v keep="$KEEP_ROLES" '
function hex4() { return sprintf("%04x", int(rand() * 65536)) }
function uuid(  a, b, c, d) {
  a = hex4() hex4(); b = hex4()
  c = sprintf("4%03x", int(rand() * 4096))
  d = sprintf("%x%03x", 8 + int(rand() * 4), int(rand() * 4096))
  return a "-" b "-" c "-" d "-" hex4() hex4() hex4()
}
function pick(n) { return int(rand() * n) + 1 }
function phone() { return sprintf("+1555%07d", int(rand() * 10000000)) }
function q(s) { gsub(/\047/, "\047\047", s); return "\047" s "\047" }
function qn(s) { return s == "" ? "null" : q(s) }
function now(  cmd, t) { cmd = "date +%s.%N"; cmd | getline t; close(cmd); return t + 0 }
function progress() {
  printf "\\warn P %d %d %d %d %d %d %d %d %d\n", nev, nevents, nupd, ndel, nrole, nrule, ncon, naudit, nhealth
}
function pace(  t, target) {
  if (rate <= 0) return
  fflush()
  t = now(); target = t0 + nev / rate
  if (target > t) system(sprintf("sleep %.3f", target - t))
}
function audit(o, actor, action, table, target, detail) {
  printf "insert into public.audit_log (org_id, actor_id, action, target_table, target_id, detail) values (%s, %s, %s, %s, %s, %s);", q(org[o]), qn(actor), q(action), qn(table), qn(target), q(detail)
}
function insert_event(  o, c, u, kind, dir, status, dur, them, us, id, r) {
  o = pick(norgs); id = uuid()
  kind = rand() < 0.6 ? "call" : "sms"
  dir = rand() < 0.55 ? "inbound" : "outbound"
  c = rand() < 0.85 ? pick(ncontacts) : 0
  u = rand() < 0.8 ? pick(nusers) : 0
  them = c ? cphone[o, c] : phone(); us = line[o]
  r = rand()
  if (kind == "call") {
    if (r < 0.5) { status = "completed"; dur = 5 + int(rand() * 600) }
    else if (r < 0.7) { status = "missed"; dur = 0 }
    else if (r < 0.8) { status = "voicemail"; dur = 10 + int(rand() * 60) }
    else { status = "in_progress"; dur = "" }
  } else {
    dur = ""
    if (dir == "inbound") status = "received"
    else status = r < 0.3 ? "sent" : (r < 0.95 ? "delivered" : "failed")
  }
  # With keys, the body is a placeholder that encrypt_bodies() turns into the ciphertext of walcast,
  # bound to the event id (docs/encryption.md).
  body = bodies ? sprintf("__BODY__%s|%s note %d: %s__END__", id, kind, nev + 1, status) : "null"
  printf "insert into public.events (id, org_id, contact_id, user_id, kind, direction, status, started_at, duration_s, from_number, to_number, body) values (%s, %s, %s, %s, %s, %s, %s, now() - interval \047%d seconds\047, %s, %s, %s, %s) on conflict do nothing;\n", q(id), q(org[o]), (c ? q(cid[o, c]) : "null"), (u ? q(uid[o, u]) : "null"), q(kind), q(dir), q(status), int(rand() * 30), (dur == "" ? "null" : dur), q(dir == "inbound" ? them : us), q(dir == "inbound" ? us : them), body
  nev++; ev[nev] = id; evorg[nev] = o; evkind[nev] = kind; evlive[nev] = 1
}
# A live event chosen at random, 0 if three tries hit deleted ones.
function live_event(  i, k) {
  for (k = 0; k < 3; k++) { i = pick(nev); if (evlive[i]) return i }
  return 0
}
function update_event(  i, o) {
  if (!(i = live_event())) return insert_event()
  o = evorg[i]
  if (rand() < 0.3) {
    # Reassign the handling user (or unassign): changes who sees the event.
    printf "update public.events set user_id = %s where id = %s;\n", (rand() < 0.8 ? q(uid[o, pick(nusers)]) : "null"), q(ev[i])
  } else if (evkind[i] == "call") {
    printf "update public.events set status = \047completed\047, duration_s = %d where id = %s;\n", 5 + int(rand() * 900), q(ev[i])
  } else {
    printf "update public.events set status = %s where id = %s;\n", q(rand() < 0.9 ? "delivered" : "failed"), q(ev[i])
  }
  nupd++
}
function delete_event(  i) {
  if (!(i = live_event())) return insert_event()
  printf "delete from public.events where id = %s;\n", q(ev[i])
  evlive[i] = 0; ndel++
}
# Promote, demote, remove or re-add a user; user 1 of each org stays its owner, and so do the
# users of --keep-roles keep their roles (an org where all are kept gets an audit row instead).
function role_change(  o, u, old, new, tries) {
  o = pick(norgs)
  do u = 1 + pick(nusers - 1); while ((uid[o, u] in kept) && ++tries < 50)
  if (uid[o, u] in kept) return audit_row()
  old = role[o, u]
  printf "begin; "
  if (old == "") {
    new = ROLES[pick(5)]
    printf "insert into public.org_roles (org_id, user_id, role) values (%s, %s, %s) on conflict (org_id, user_id) do update set role = excluded.role; ", q(org[o]), q(uid[o, u]), q(new)
    audit(o, uid[o, 1], "role.add", "org_roles", uid[o, u], "{\"role\":\"" new "\"}")
  } else if (rand() < 0.2) {
    new = ""
    printf "delete from public.org_roles where org_id = %s and user_id = %s; ", q(org[o]), q(uid[o, u])
    audit(o, uid[o, 1], "role.remove", "org_roles", uid[o, u], "{\"role\":\"" old "\"}")
  } else {
    do new = ROLES[pick(5)]; while (new == old)
    printf "update public.org_roles set role = %s where org_id = %s and user_id = %s; ", q(new), q(org[o]), q(uid[o, u])
    audit(o, uid[o, 1], "role.change", "org_roles", uid[o, u], "{\"from\":\"" old "\",\"to\":\"" new "\"}")
  }
  print " commit;"
  role[o, u] = new; nrole++
}
# Add, change or lift a contact privacy rule.
function rule_change(  o, c, old, new) {
  o = pick(norgs); c = pick(ncontacts); old = crule[o, c]
  printf "begin; "
  if (old == "") {
    new = ROLES[pick(5)]
    printf "insert into public.privacy_rules (id, org_id, contact_id, min_role) values (%s, %s, %s, %s) on conflict (contact_id) do update set min_role = excluded.min_role; ", q(uuid()), q(org[o]), q(cid[o, c]), q(new)
    audit(o, uid[o, 1], "rule.add", "privacy_rules", cid[o, c], "{\"min_role\":\"" new "\"}")
  } else if (rand() < 0.3) {
    new = ""
    printf "delete from public.privacy_rules where contact_id = %s; ", q(cid[o, c])
    audit(o, uid[o, 1], "rule.remove", "privacy_rules", cid[o, c], "{\"min_role\":\"" old "\"}")
  } else {
    do new = ROLES[pick(5)]; while (new == old)
    printf "update public.privacy_rules set min_role = %s where contact_id = %s; ", q(new), q(cid[o, c])
    audit(o, uid[o, 1], "rule.change", "privacy_rules", cid[o, c], "{\"from\":\"" old "\",\"to\":\"" new "\"}")
  }
  print " commit;"
  crule[o, c] = new; nrule++
}
function contact_update(  o, c) {
  o = pick(norgs); c = pick(ncontacts)
  if (rand() < 0.5) {
    cphone[o, c] = phone()
    printf "update public.contacts set phone = %s where id = %s;\n", q(cphone[o, c]), q(cid[o, c])
  } else {
    printf "update public.contacts set name = %s where id = %s;\n", q(FIRST[pick(nfirst)] " " LAST[pick(nlast)]), q(cid[o, c])
  }
  ncon++
}
function audit_row(  o, u) {
  o = pick(norgs); u = pick(nusers)
  audit(o, uid[o, u], ACTIONS[pick(nactions)], "", "", "{}")
  print ""
  naudit++
}
function health_row(  o, r, status) {
  o = pick(norgs); r = rand()
  status = r < 0.85 ? "ok" : (r < 0.95 ? "degraded" : "down")
  printf "insert into public.sync_health (org_id, source, status, lag_s) values (%s, %s, %s, %.2f);\n", q(org[o]), q(SOURCES[pick(nsources)]), q(status), (status == "ok" ? rand() * 2 : 5 + rand() * 300)
  nhealth++
}
BEGIN {
  srand(seed)
  split("owner admin analyst member viewer", ROLES, " ")
  nfirst = split("Ada Bea Cal Dev Eli Fay Gus Hal Ivy Jon Kai Liv Max Nia Oto Pam Quinn Ray Sia Tom Uma Vic Wes Xia Yan Zoe", FIRST, " ")
  nlast = split("Adams Baker Chen Diaz Evans Fox Garcia Hughes Ito Jones Khan Lopez Moore Nguyen Ortiz Patel Reyes Singh Tran Weber", LAST, " ")
  nactions = split("login export.csv report.run contact.view settings.update", ACTIONS, " ")
  nsources = split("carrier crm twilio warehouse", SOURCES, " ")

  # Seeding: one transaction; rows that already exist (same seed, same database) are kept.
  print "begin;"
  for (o = 1; o <= norgs; o++) {
    org[o] = uuid(); line[o] = phone()
    printf "insert into public.orgs (id, name) values (%s, %s) on conflict do nothing;\n", q(org[o]), q("Demo org " o " (seed " seed ")")
    for (u = 1; u <= nusers; u++) {
      uid[o, u] = uuid(); role[o, u] = ROLES[(u - 1) % 5 + 1]; isuser[uid[o, u]] = 1
      printf "insert into public.org_roles (org_id, user_id, role) values (%s, %s, %s) on conflict do nothing;\n", q(org[o]), q(uid[o, u]), q(role[o, u])
    }
    for (c = 1; c <= ncontacts; c++) {
      cid[o, c] = uuid(); cphone[o, c] = phone()
      printf "insert into public.contacts (id, org_id, name, phone) values (%s, %s, %s, %s) on conflict do nothing;\n", q(cid[o, c]), q(org[o]), q(FIRST[pick(nfirst)] " " LAST[pick(nlast)]), q(cphone[o, c])
      crule[o, c] = ""
      if (rand() < 0.35) {
        crule[o, c] = ROLES[pick(5)]
        printf "insert into public.privacy_rules (id, org_id, contact_id, min_role) values (%s, %s, %s, %s) on conflict do nothing;\n", q(uuid()), q(org[o]), q(cid[o, c]), q(crule[o, c])
      }
    }
  }
  print "commit;"

  nkeep = split(keep, KEEP, ",")
  for (k = 1; k <= nkeep; k++) {
    if (!(KEEP[k] in isuser)) {
      printf "traffic: --keep-roles: %s is not a user of the seeded orgs (see --print-users)\n", KEEP[k] > "/dev/stderr"
      exit 2
    }
    kept[KEEP[k]] = 1
  }

  if (seedonly) {
    printf "select r.org_id, r.user_id, r.role from public.org_roles r where r.org_id in ("
    for (o = 1; o <= norgs; o++) printf "%s%s", (o > 1 ? ", " : ""), q(org[o])
    print ") order by r.org_id, array_position(array[\047owner\047, \047admin\047, \047analyst\047, \047member\047, \047viewer\047], r.role), r.user_id;"
    exit
  }

  progress()
  chunk = rate > 0 ? int(rate / 20) : 200
  if (chunk < 1) chunk = 1
  if (rate > 0) t0 = now()
  while (nev < nevents) {
    before = nev
    r = rand()
    if (r < 0.70 || nev == 0) insert_event()
    else if (r < 0.82) update_event()
    else if (r < 0.86) delete_event()
    else if (r < 0.89) role_change()
    else if (r < 0.91) rule_change()
    else if (r < 0.93) contact_update()
    else if (r < 0.97) audit_row()
    else health_row()
    if (nev > before && nev % chunk == 0) { progress(); pace() }
  }
  progress()
  print "\\warn DONE"
}'
}

if [ "$PRINT_USERS" = 1 ]; then
  generate 1 | "${PSQL[@]}" -At -F ' ' -f -
  exit
fi

# Reads psql's stderr: progress markers become one summary line per second, anything else
# (an error) is passed through.
report() {
  local line last_sec=-1 start=$EPOCHREALTIME ev=0 tot=$EVENTS upd=0 del=0 role=0 rule=0 con=0 aud=0 hea=0 done=0 rc
  summary() {
    local el_rate
    el_rate=$(awk -v s="$start" -v n="$EPOCHREALTIME" -v e="$ev" -v tot="$tot" \
      'BEGIN { t = n - s; printf "%.1fs events %d/%d (%d/s)", t, e, tot, (t > 0 ? e / t : 0) }')
    echo "traffic: ${1}${el_rate} updates $upd deletes $del roles $role rules $rule contacts $con audit $aud health $hea" >&2
  }
  while :; do
    rc=0
    IFS= read -r -t 1 line || rc=$?
    if [ "$rc" -eq 0 ]; then
      case "$line" in
        'P '*) read -r _ ev tot upd del role rule con aud hea <<<"$line" ;;
        DONE) done=1 ;;
        *) printf '%s\n' "$line" >&2 ;;
      esac
    elif [ "$rc" -le 128 ]; then
      break # end of input
    fi
    if [ "$EPOCHSECONDS" != "$last_sec" ]; then
      [ "$last_sec" = -1 ] || summary ""
      last_sec=$EPOCHSECONDS
    fi
  done
  if [ "$done" = 1 ]; then summary "done in "; else echo "traffic: stopped before the end" >&2; return 1; fi
}

set +e
generate 0 | encrypt_bodies | "${PSQL[@]}" -f - 2>&1 >/dev/null | report
status=("${PIPESTATUS[@]}")
set -e
if [ "${status[2]}" != 0 ]; then
  echo "traffic: psql failed (exit ${status[2]})" >&2; exit 1
fi
if [ "${status[0]}" != 0 ] || [ "${status[1]}" != 0 ] || [ "${status[3]}" != 0 ]; then exit 1; fi
