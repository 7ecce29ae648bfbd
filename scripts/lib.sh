# shellcheck shell=bash
# Shared helpers for scripts/stack, scripts/test and scripts/demo.
# Every service runs on loopback only, with its state under $STACK_DIR.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export REPO_ROOT
export STACK_DIR="${STACK_DIR:-$REPO_ROOT/target/stack}"
# The demo/test password of the stack's users (alice, bob, load users).
export OPUSH_DEMO_PASSWORD="${OPUSH_DEMO_PASSWORD:-opush-demo}"

log() { printf '[stack %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# wait_port HOST PORT SECONDS: wait until a TCP connect to HOST:PORT succeeds.
wait_port() {
  local host=$1 port=$2 secs=${3:-30} i
  for ((i = 0; i < secs * 10; i++)); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# port_open HOST PORT: one immediate connect attempt.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

_apt_updated=""
# apt_install PKG…: install the Debian packages that are missing (idempotent).
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$_apt_updated" ]; then
    log "apt-get update"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    _apt_updated=1
  fi
  log "installing ${missing[*]}"
  # Package maintainer scripts must not start daemons: we start them ourselves on loopback.
  local policy=/usr/sbin/policy-rc.d created=""
  if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' >$policy; chmod +x $policy; created=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { [ -n "$created" ] && rm -f $policy; die "apt-get install ${missing[*]} failed"; }
  [ -n "$created" ] && rm -f $policy
  return 0
}

# pid_alive FILE: the process whose pid is in FILE runs.
pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
