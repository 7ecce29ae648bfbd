# shellcheck shell=bash
# Radicale 3 (Debian's package): CalDAV and CardDAV on http://127.0.0.1:5232
# only, our own process (as the `radicale` user) with its own config and
# storage in $STACK_DIR/radicale (the package's system service is not used).
# htpasswd auth (bcrypt) for alice@ and bob@example.test, password
# $OPUSH_DEMO_PASSWORD (default opush-demo); each user reaches only their own
# collections (rights: owner_only). Each has a calendar
# /<user>/calendar/ and an address book /<user>/contacts/; alice's hold a few
# seeded events and contacts (RADICALE_SEED_* below) for sync tests.

RADICALE_DIR="$STACK_DIR/radicale"
RADICALE_CONF="$RADICALE_DIR/config"
RADICALE_PORT=5232
RADICALE_USERS=(alice@example.test bob@example.test)
# Debian's python3 (python3-radicale, python3-passlib, python3-bcrypt), not
# whatever python3 comes first in PATH.
RADICALE_PYTHON=/usr/bin/python3

radicale_install() {
  apt_install radicale python3-passlib python3-bcrypt
}

# _radicale_write_users: $RADICALE_DIR/users (htpasswd, bcrypt). A hash that
# still matches the password is kept, and the file is only replaced when its
# content changes (Radicale re-reads it on every login).
_radicale_write_users() {
  local tmp="$RADICALE_DIR/users.new"
  # The password travels on stdin, never in argv or the environment of a
  # child that could log it.
  printf '%s' "$OPUSH_DEMO_PASSWORD" | "$RADICALE_PYTHON" -c '
import sys
from passlib.hash import bcrypt
password = sys.stdin.read()
path, users = sys.argv[1], sys.argv[2:]
old = {}
try:
    with open(path) as f:
        for line in f:
            name, _, h = line.rstrip("\n").partition(":")
            old[name] = h
except FileNotFoundError:
    pass
for u in users:
    h = old.get(u)
    if not h or not bcrypt.verify(password, h):
        h = bcrypt.using(rounds=10).hash(password)
    print(f"{u}:{h}")
' "$RADICALE_DIR/users" "${RADICALE_USERS[@]}" >"$tmp" || die "radicale: could not hash the demo password"
  chmod 640 "$tmp"
  chgrp radicale "$tmp"
  if cmp -s "$tmp" "$RADICALE_DIR/users"; then rm -f "$tmp"; else mv -f "$tmp" "$RADICALE_DIR/users"; fi
}

_radicale_write_config() {
  mkdir -p "$RADICALE_DIR/collections"
  cat >"$RADICALE_CONF" <<CONF
# Written by scripts/stack (radicale plug-in). Loopback only.
[server]
hosts = 127.0.0.1:$RADICALE_PORT

[auth]
type = htpasswd
htpasswd_filename = $RADICALE_DIR/users
htpasswd_encryption = bcrypt
realm = opush test stack

[rights]
type = owner_only

[storage]
filesystem_folder = $RADICALE_DIR/collections

[web]
type = none

[logging]
level = info
mask_passwords = True
CONF
}

# _radicale_put FILE CONTENT: writes FILE (CRLF line ends) when it is missing,
# so a collection a test or client changed keeps its changes, but a deleted
# seed item comes back on the next `scripts/stack up`.
_radicale_put() {
  [ -e "$1" ] && return 0
  printf '%s\n' "$2" | sed 's/$/\r/' >"$1"
}

# _radicale_seed: every user's calendar and address book, alice's seed items.
_radicale_seed() {
  local root="$RADICALE_DIR/collections/collection-root" u home
  for u in "${RADICALE_USERS[@]}"; do
    home="$root/$u"
    mkdir -p "$home/calendar" "$home/contacts"
    [ -e "$home/calendar/.Radicale.props" ] ||
      printf '{"tag": "VCALENDAR", "D:displayname": "Calendar", "C:supported-calendar-component-set": "VEVENT,VTODO"}' \
        >"$home/calendar/.Radicale.props"
    [ -e "$home/contacts/.Radicale.props" ] ||
      printf '{"tag": "VADDRESSBOOK", "D:displayname": "Contacts"}' >"$home/contacts/.Radicale.props"
  done
  home="$root/alice@example.test"
  _radicale_put "$home/calendar/seed-kickoff.ics" "BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//opush//test stack//EN
BEGIN:VEVENT
UID:seed-kickoff@example.test
DTSTAMP:20260101T090000Z
DTSTART:20270115T090000Z
DTEND:20270115T100000Z
SUMMARY:Project kickoff
LOCATION:Building A\\, room 1.01
DESCRIPTION:Seeded by scripts/stack (radicale plug-in).
ORGANIZER;CN=Alice Archer:mailto:alice@example.test
ATTENDEE;CN=Bob Baker;PARTSTAT=NEEDS-ACTION:mailto:bob@example.test
END:VEVENT
END:VCALENDAR"
  _radicale_put "$home/calendar/seed-standup.ics" "BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//opush//test stack//EN
BEGIN:VEVENT
UID:seed-standup@example.test
DTSTAMP:20260101T090000Z
DTSTART:20260105T083000Z
DTEND:20260105T084500Z
RRULE:FREQ=WEEKLY;BYDAY=MO,WE,FR
SUMMARY:Team stand-up
END:VEVENT
END:VCALENDAR"
  _radicale_put "$home/contacts/seed-bob.vcf" "BEGIN:VCARD
VERSION:3.0
UID:seed-bob@example.test
FN:Bob Baker
N:Baker;Bob;;;
EMAIL;TYPE=INTERNET,WORK:bob@example.test
TEL;TYPE=WORK:+1 555 0101
ORG:Example Corp;Sales
TITLE:Sales Director
END:VCARD"
  _radicale_put "$home/contacts/seed-carol.vcf" "BEGIN:VCARD
VERSION:3.0
UID:seed-carol@example.test
FN:Carol Clark
N:Clark;Carol;;;
EMAIL;TYPE=INTERNET,HOME:carol@example.net
TEL;TYPE=CELL:+1 555 0299
NOTE:Seeded by scripts/stack (radicale plug-in).
END:VCARD"
  chown -R radicale:radicale "$RADICALE_DIR/collections"
}

radicale_up() {
  mkdir -p "$RADICALE_DIR"
  if port_open 127.0.0.1 $RADICALE_PORT; then die "radicale: 127.0.0.1:$RADICALE_PORT is taken by another process"; fi
  _radicale_write_config
  _radicale_write_users
  _radicale_seed
  # Its own session (Ctrl-C in scripts/demo must not reach it), as the
  # radicale user, logging (passwords masked) to radicale.log.
  setsid setpriv --reuid=radicale --regid=radicale --init-groups \
    "$RADICALE_PYTHON" -m radicale --config "$RADICALE_CONF" \
    </dev/null >>"$RADICALE_DIR/radicale.log" 2>&1 &
  echo $! >"$RADICALE_DIR/radicale.pid"
  sha256sum <"$RADICALE_CONF" >"$RADICALE_DIR/config.sha256"
  if ! wait_port 127.0.0.1 $RADICALE_PORT 30; then
    tail -20 "$RADICALE_DIR/radicale.log" >&2
    die "radicale did not open port $RADICALE_PORT (see $RADICALE_DIR/radicale.log)"
  fi
}

# radicale_refresh: called by `scripts/stack up` when Radicale already runs:
# users file and seed collections up to date (Radicale re-reads both), and a
# restart when the config changed.
radicale_refresh() {
  _radicale_write_config
  _radicale_write_users
  _radicale_seed
  if [ "$(sha256sum <"$RADICALE_CONF")" != "$(cat "$RADICALE_DIR/config.sha256" 2>/dev/null)" ]; then
    log "radicale: config changed, restarting"
    radicale_down
    radicale_up
  fi
}

radicale_down() {
  local pidfile="$RADICALE_DIR/radicale.pid" i
  pid_alive "$pidfile" || return 0
  kill "$(cat "$pidfile")" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }; sleep 0.1; done
  kill -9 "$(cat "$pidfile")" 2>/dev/null || true
  rm -f "$pidfile"
}

radicale_status() {
  pid_alive "$RADICALE_DIR/radicale.pid" && port_open 127.0.0.1 $RADICALE_PORT || return 1
  # Answering: an unauthenticated PROPFIND on / is refused with 401.
  local status
  status=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$RADICALE_PORT
    printf 'PROPFIND / HTTP/1.0\r\nDepth: 0\r\nContent-Length: 0\r\n\r\n' >&3
    IFS= read -r line <&3; echo \"\$line\"" 2>/dev/null) || true
  [[ "$status" == "HTTP/1."*" 401 "* ]]
}
