#!/usr/bin/env bash
# Installs what walcast needs to build, test, benchmark and run its demo on Debian 12.
# Idempotent: packages already present are skipped, so a second run costs a few seconds.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libpq-dev libnng-dev libjansson-dev libssl-dev libhiredis-dev libcmocka-dev
  libwebsockets-dev libjwt-dev libinih-dev libuv1-dev libwebsockets-evlib-uv libpcre2-dev
  postgresql-15 postgresql-client-15 postgresql-15-wal2json redis-server
  jq hyperfine time procps python3 openssl bc prometheus strace nng-utils curl wrk
  haproxy # tests/integration/lb_haproxy.sh runs its own with deploy/haproxy/walcast.cfg
  socat # deploy/haproxy/walcast-lb-edge talks to HAProxy's runtime API (tests/integration/lb_edges.sh)
  chromium # the demo dashboard's Playwright test (tests/integration/demo.sh), headless
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# node and npm for tests/realtime-js (realtime-js 2.119.0 with its ws transport runs on Debian's
# Node 18 and on NodeSource's 20, whose nodejs package includes npm: asked for only when missing)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
echo "walcast: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
# The Debian package starts a cluster of its own on 5432; walcast's harness starts private
# clusters on free ports and does not need it.
# prometheus is installed for promtool, which checks walcast's /metrics output
# (tests/unit/test_metrics.c); the Prometheus server the package also installs is not needed.
# The haproxy package enables haproxy.service and starts it with /etc/haproxy/haproxy.cfg; the
# test starts its own haproxy on loopback ports and needs no service: when this script installed
# the package, stop the service and keep it from starting at boot (without systemd, e.g. in a
# container: the boot links, and the init script if it started it).
if [[ " ${missing[*]} " == *" haproxy "* ]]; then
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now --quiet haproxy.service
  else
    $SUDO systemctl disable --quiet haproxy.service 2>/dev/null || $SUDO update-rc.d haproxy disable >/dev/null 2>&1 || true
    $SUDO invoke-rc.d haproxy stop >/dev/null 2>&1 || true
  fi
fi
