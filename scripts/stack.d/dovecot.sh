# shellcheck shell=bash
# Dovecot: IMAP on 127.0.0.1:1143 (CONDSTORE/QRESYNC, SPECIAL-USE, NOTIFY, IDLE),
# LMTP on 127.0.0.1:1024 for Postfix, SASL auth on 127.0.0.1:1026 for
# Postfix submission, and ManageSieve (RFC 5804) on 127.0.0.1:1190 with the
# Pigeonhole Sieve plug-in run by LMTP delivery (vacation replies, the
# out-of-office opush sets, go out through Postfix on 127.0.0.1:1025). Users: alice@ and bob@example.test, 1400 load users
# loadNNNN@load.test (OPUSH_STACK_LOAD_USERS to change), and a master user
# `opush-master` (login as `user*opush-master`) for background push.
# Passwords: $OPUSH_DEMO_PASSWORD (default opush-demo), except the
# utf8pw* users of DOVECOT_SPECIAL_USERS below.

DOVECOT_DIR="$STACK_DIR/dovecot"
DOVECOT_CONF="$DOVECOT_DIR/dovecot.conf"
DOVECOT_IMAP_PORT=1143
DOVECOT_LMTP_PORT=1024
DOVECOT_AUTH_PORT=1026
DOVECOT_SIEVE_PORT=1190
# Where Sieve vacation/redirect sends mail: the stack's Postfix relay
# (scripts/stack.d/postfix.sh), which takes loopback clients without auth.
DOVECOT_SUBMISSION_HOST=127.0.0.1:1025

dovecot_install() {
  apt_install dovecot-imapd dovecot-lmtpd dovecot-sieve dovecot-managesieved
}

# _dovecot_sieve_config SIEVE_PORT: the Sieve part of a configuration (LMTP
# runs the user's active script at delivery, ManageSieve on
# 127.0.0.1:SIEVE_PORT edits the scripts). Vacation replies go to Postfix
# over SMTP (`submission_host`) rather than through `sendmail_path`: the
# relay is named by host and port like everything else in the stack, works
# the same for a Dovecot that does not share a machine (or a Postfix
# instance) with the relay, and needs no setgid postdrop from the mail user.
_dovecot_sieve_config() {
  local sieve_port=$1
  cat <<CONF
# Sieve (Pigeonhole): scripts under ~/sieve, the active one linked from
# ~/dovecot.sieve (no leading dot: home is the Maildir++ root, where a
# dot name is a folder); run by LMTP at delivery.
protocol lmtp {
  mail_plugins = \$mail_plugins sieve
}
plugin {
  sieve = file:~/sieve;active=~/dovecot.sieve
  # A vacation reply at most once a day per sender (RFC 5230's default
  # minimum, which opush's scripts ask for).
  sieve_vacation_min_period = 1d
}
submission_host = $DOVECOT_SUBMISSION_HOST
service managesieve-login {
  inet_listener sieve {
    address = 127.0.0.1
    port = $sieve_port
  }
}
CONF
}

# Users whose passwords need more than a quoted ASCII IMAP string (non-ASCII,
# quotes, backslash, space, `%`, `:`): user, then password, in pairs. The
# tests know the same pairs (tests/src/lib.rs SPECIAL_PASSWORD_USERS).
# utf8pw1's password is Latin-1 representable (a Latin-1 Basic credential
# test); utf8pw3's is not (Cyrillic, CJK, an emoji).
DOVECOT_SPECIAL_USERS=(
  utf8pw1@example.test 'Grüße-2026 100%'
  utf8pw2@example.test 'p@ss "quoted" \ back:slash'
  utf8pw3@example.test 'пароль 密码🔑'
)

# _dovecot_hash FILE USER PASSWORD: USER's hash in FILE when it still matches
# PASSWORD, else a new SHA512-CRYPT hash of PASSWORD.
_dovecot_hash() {
  local file=$1 user=$2 pass=$3 old=""
  if [ -f "$file" ]; then
    old=$(awk -F: -v u="$user" '$1 == u { print $2; exit }' "$file")
    if [ -n "$old" ] && doveadm -c /dev/null pw -t "$old" -p "$pass" >/dev/null 2>&1; then
      echo "$old"
      return
    fi
  fi
  doveadm -c /dev/null pw -s SHA512-CRYPT -p "$pass" 2>/dev/null \
    || doveadm pw -s SHA512-CRYPT -p "$pass"
}

# _dovecot_write_users DIR: writes DIR/users (alice, bob, and
# OPUSH_STACK_LOAD_USERS load users, default 1400: load0001-0100 and load1101-1400 for the tests,
# load0101-1100 for the push load tool, and DOVECOT_SPECIAL_USERS) and prints
# the demo password hash used.
# Idempotent: an existing hash that still matches the password is reused and
# the file is replaced only when its content changes, so running it against a
# live Dovecot (which re-reads a changed passwd-file) is harmless.
_dovecot_write_users() {
  local dir=$1 hash
  hash=$(_dovecot_hash "$dir/users" alice@example.test "$OPUSH_DEMO_PASSWORD")
  local tmp="$dir/users.new" n=${OPUSH_STACK_LOAD_USERS:-1400} i
  {
    echo "alice@example.test:$hash::::::"
    echo "bob@example.test:$hash::::::"
    for ((i = 1; i <= n; i++)); do printf 'load%04d@load.test:%s::::::\n' "$i" "$hash"; done
    for ((i = 0; i < ${#DOVECOT_SPECIAL_USERS[@]}; i += 2)); do
      printf '%s:%s::::::\n' "${DOVECOT_SPECIAL_USERS[i]}" \
        "$(_dovecot_hash "$dir/users" "${DOVECOT_SPECIAL_USERS[i]}" "${DOVECOT_SPECIAL_USERS[i + 1]}")"
    done
  } >"$tmp"
  chmod 640 "$tmp"
  chgrp dovecot "$tmp"
  if cmp -s "$tmp" "$dir/users"; then rm -f "$tmp"; else mv -f "$tmp" "$dir/users"; fi
  echo "$hash"
}

# dovecot_refresh: called by `scripts/stack up` when Dovecot already runs:
# brings the users file up to date (no restart).
dovecot_refresh() {
  _dovecot_raise_inotify
  [ -d "$DOVECOT_DIR" ] || return 0
  # A configuration this plug-in now writes differently is reloaded into the
  # running instance (the users are rewritten by it too).
  local before=""
  [ -f "$DOVECOT_CONF" ] && before=$(cat "$DOVECOT_CONF")
  _dovecot_write_config
  if [ "$before" != "$(cat "$DOVECOT_CONF")" ]; then
    log "dovecot: configuration changed, reloading"
    doveadm -c "$DOVECOT_CONF" reload || die "dovecot did not reload $DOVECOT_CONF"
  fi
  # A master that cannot take the configuration keeps the old one and only
  # logs it (e.g. `protocols = … sieve` when Pigeonhole was installed after
  # the master started: "Unknown protocol: sieve"), so check every listener
  # and restart when one is missing.
  local port
  for port in $DOVECOT_IMAP_PORT $DOVECOT_LMTP_PORT $DOVECOT_SIEVE_PORT; do
    if ! wait_port 127.0.0.1 "$port" 5; then
      log "dovecot: nothing listens on $port after the reload, restarting"
      dovecot_down
      dovecot_up
      return
    fi
  done
}

# _dovecot_write_config [DIR IMAP_PORT [INSTANCE [LMTP_PORT SIEVE_PORT]]]: the
# shared instance by default; with arguments, a private instance
# (scripts/dovecot-private) that a test may stop and start without disturbing
# anyone else: IMAP only, or with LMTP_PORT and SIEVE_PORT also LMTP delivery
# running Sieve and ManageSieve.
_dovecot_write_config() {
  local DOVECOT_DIR=${1:-$DOVECOT_DIR} DOVECOT_IMAP_PORT=${2:-$DOVECOT_IMAP_PORT}
  local instance=${3:-opush-dovecot} DOVECOT_CONF=${1:+$1/dovecot.conf}
  DOVECOT_CONF=${DOVECOT_CONF:-$DOVECOT_DIR/dovecot.conf}
  local lmtp_port=${4:-} sieve_port=${5:-}
  local protocols="imap lmtp sieve"
  if [ -n "${1:-}" ]; then
    protocols="imap"
    if [ -n "$sieve_port" ]; then protocols="imap lmtp sieve"; fi
  else
    lmtp_port=$DOVECOT_LMTP_PORT sieve_port=$DOVECOT_SIEVE_PORT
  fi
  mkdir -p "$DOVECOT_DIR/run" "$DOVECOT_DIR/mail"
  chown mail:mail "$DOVECOT_DIR/mail"
  local hash
  hash=$(_dovecot_write_users "$DOVECOT_DIR")
  echo "opush-master:$hash::::::" >"$DOVECOT_DIR/master-users"
  chmod 640 "$DOVECOT_DIR/master-users"
  chgrp dovecot "$DOVECOT_DIR/master-users"
  cat >"$DOVECOT_CONF" <<CONF
# Written by scripts/stack (dovecot plug-in). Loopback only.
protocols = $protocols
listen = 127.0.0.1
base_dir = $DOVECOT_DIR/run
instance_name = $instance
state_dir = $DOVECOT_DIR/state
log_path = $DOVECOT_DIR/dovecot.log
info_log_path = $DOVECOT_DIR/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_master_user_separator = *
first_valid_uid = 8
mail_uid = mail
mail_gid = mail
mail_location = maildir:$DOVECOT_DIR/mail/%d/%n
mailbox_list_index = yes
mail_max_userip_connections = 10000
protocol imap {
  mail_max_userip_connections = 10000
  imap_idle_notify_interval = 2 mins
  # Connections in IDLE (opush push watchers) move to one shared
  # imap-hibernate process after 5 s instead of keeping an imap process each.
  imap_hibernate_timeout = 5s
}
passdb {
  driver = passwd-file
  args = scheme=SHA512-CRYPT $DOVECOT_DIR/master-users
  master = yes
  result_success = continue
}
passdb {
  driver = passwd-file
  args = scheme=SHA512-CRYPT username_format=%Lu $DOVECOT_DIR/users
}
userdb {
  driver = static
  args = uid=mail gid=mail home=$DOVECOT_DIR/mail/%d/%n
}
namespace inbox {
  inbox = yes
  separator = /
  mailbox Drafts {
    special_use = \\Drafts
    auto = subscribe
  }
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
  mailbox Junk {
    special_use = \\Junk
    auto = subscribe
  }
  mailbox Archive {
    special_use = \\Archive
    auto = create
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $DOVECOT_IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
  process_min_avail = 1
  service_count = 0
  client_limit = 10000
}
service imap {
  process_limit = 4096
  client_limit = 1
  # imap-hibernate (running as the internal user) hands connections back
  # through this socket. Loopback test stack only: it lets that user reach
  # any mailbox.
  unix_listener imap-master {
    user = \$default_internal_user
  }
  extra_groups = \$default_internal_group
}
service imap-hibernate {
  unix_listener imap-hibernate {
    mode = 0660
    group = \$default_internal_group
  }
  client_limit = 20000
}
default_vsz_limit = 512M
# Every imap process talks to stats and anvil: with thousands of push
# watchers their default limit of 1000 clients stalls new logins.
default_client_limit = 20000
CONF
  if [ -n "$sieve_port" ]; then
    cat >>"$DOVECOT_CONF" <<CONF
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $lmtp_port
  }
}
CONF
    _dovecot_sieve_config "$sieve_port" >>"$DOVECOT_CONF"
  fi
  if [ -z "${1:-}" ]; then
    cat >>"$DOVECOT_CONF" <<CONF
service auth {
  inet_listener {
    address = 127.0.0.1
    port = $DOVECOT_AUTH_PORT
  }
}
# No per-IP auth penalty on the shared instance: the whole suite logs in from
# 127.0.0.1, in parallel, with wrong passwords on purpose, and the penalty
# (2 s doubling to 15 s for every login from the IP until one succeeds) made
# unrelated tests' LOGINs time out. Private instances keep it.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
CONF
  fi
  mkdir -p "$DOVECOT_DIR/state"
}

# _dovecot_raise_inotify: every IDLE process of the mail user needs an inotify
# instance; past the kernel's default of 128 Dovecot falls back to polling
# (30 s) and cannot hibernate. Best effort (needs root).
_dovecot_raise_inotify() {
  local f=/proc/sys/fs/inotify/max_user_instances
  if [ -w "$f" ] && [ "$(cat "$f")" -lt 8192 ]; then echo 8192 >"$f" || true; fi
}

dovecot_up() {
  _dovecot_raise_inotify
  _dovecot_write_config
  ulimit -n 65536 2>/dev/null || true
  # The master daemonises but keeps the stderr it was given: hand it a file, not the caller's
  # terminal or pipe (`scripts/stack up | tail` would otherwise wait for Dovecot to exit).
  dovecot -c "$DOVECOT_CONF" </dev/null >/dev/null 2>>"$DOVECOT_DIR/dovecot-start.log" ||
    { cat "$DOVECOT_DIR/dovecot-start.log" >&2; die "dovecot failed to start (see $DOVECOT_DIR/dovecot.log)"; }
  wait_port 127.0.0.1 $DOVECOT_IMAP_PORT 30 || die "dovecot IMAP did not open port $DOVECOT_IMAP_PORT"
  wait_port 127.0.0.1 $DOVECOT_LMTP_PORT 30 || die "dovecot LMTP did not open port $DOVECOT_LMTP_PORT"
  wait_port 127.0.0.1 $DOVECOT_SIEVE_PORT 30 || die "dovecot ManageSieve did not open port $DOVECOT_SIEVE_PORT"
}

dovecot_down() {
  [ -f "$DOVECOT_CONF" ] || return 0
  doveadm -c "$DOVECOT_CONF" stop 2>/dev/null || true
  local i
  for ((i = 0; i < 50; i++)); do port_open 127.0.0.1 $DOVECOT_IMAP_PORT || return 0; sleep 0.1; done
  pkill -f "dovecot -c $DOVECOT_CONF" || true
}

dovecot_status() {
  [ -f "$DOVECOT_CONF" ] && port_open 127.0.0.1 $DOVECOT_IMAP_PORT || return 1
  # Answering: the IMAP greeting arrives.
  local greeting
  greeting=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$DOVECOT_IMAP_PORT; IFS= read -r line <&3; echo \"\$line\"" 2>/dev/null) || true
  [[ "$greeting" == "* OK"* ]]
}
