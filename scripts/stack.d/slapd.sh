# shellcheck shell=bash
# OpenLDAP slapd (Debian's package): the global address list on
# ldap://127.0.0.1:3389 only, our own process with its own slapd.conf and mdb
# database in $STACK_DIR/slapd (the package's system instance is never used:
# its autostart is disabled and it is stopped if it runs, since it would
# listen on 0.0.0.0:389).
#   suffix   dc=example,dc=test
#   bind DN  cn=opush,dc=example,dc=test  (read-only service account for GAL searches)
#   admin    cn=admin,dc=example,dc=test  (rootdn)
#   people   ou=people,dc=example,dc=test: alice and bob (uid=alice, uid=bob;
#            they may bind with their own DN too) and SLAPD_EXTRA_PEOPLE
#            generated people (default 50) for a GAL search to page through.
# Every password is $OPUSH_DEMO_PASSWORD (default opush-demo), stored as
# {SSHA} with a per-stack salt. Authenticated DNs read everything but
# userPassword; anonymous binds read only the root DSE.

SLAPD_DIR="$STACK_DIR/slapd"
SLAPD_CONF="$SLAPD_DIR/slapd.conf"
SLAPD_PORT=3389
SLAPD_URL="ldap://127.0.0.1:$SLAPD_PORT"
SLAPD_SUFFIX="dc=example,dc=test"
SLAPD_EXTRA_PEOPLE=${SLAPD_EXTRA_PEOPLE:-50}

slapd_install() {
  apt_install slapd ldap-utils openssl
  # The package's own instance (ldap:/// = every address, port 389): never
  # started by us (apt_install's policy-rc.d), stopped if something else
  # started it, and kept from starting at boot. Best effort, idempotent.
  if [ -s /run/slapd/slapd.pid ] && kill -0 "$(cat /run/slapd/slapd.pid)" 2>/dev/null; then
    log "slapd: stopping the system slapd instance (it listens beyond loopback)"
    if [ -d /run/systemd/system ]; then systemctl stop slapd >/dev/null 2>&1 || true; fi
    /etc/init.d/slapd stop >/dev/null 2>&1 || true
  fi
  if [ -d /run/systemd/system ]; then systemctl disable slapd >/dev/null 2>&1 || true; fi
  if command -v update-rc.d >/dev/null; then update-rc.d slapd disable >/dev/null 2>&1 || true; fi
}

# _slapd_ssha PASSWORD: {SSHA} of PASSWORD with the stack's salt (one random
# salt per stack directory, so the seed LDIF, and its checksum, stay the same
# from one run to the next). The password only travels through a pipe.
_slapd_ssha() {
  local salt
  if [ ! -s "$SLAPD_DIR/salt" ]; then
    (umask 077 && od -An -N6 -tx1 /dev/urandom | tr -d ' \n' >"$SLAPD_DIR/salt")
  fi
  salt=$(cat "$SLAPD_DIR/salt")
  printf '{SSHA}%s' "$({
    printf '%s%s' "$1" "$salt" | openssl dgst -sha1 -binary
    printf '%s' "$salt"
  } | base64 -w0)"
}

# _slapd_person UID GIVEN SN MAIL PHONE TITLE DEPARTMENT OFFICE HASH: one inetOrgPerson.
_slapd_person() {
  cat <<LDIF
dn: uid=$1,ou=people,$SLAPD_SUFFIX
objectClass: inetOrgPerson
uid: $1
cn: $2 $3
givenName: $2
sn: $3
displayName: $2 $3
mail: $4
telephoneNumber: $5
mobile: ${5/+1 555 01/+1 555 02}
title: $6
o: Example Corp
ou: $7
physicalDeliveryOfficeName: $8
userPassword: $9

LDIF
}

# _slapd_write_seed: $SLAPD_DIR/seed.ldif, the whole directory content.
_slapd_write_seed() {
  local hash given=(Anna Ben Carla David Eva Frank Grace Hugo Iris Jonas)
  local family=(Adams Brown Clark Davis Evans Fisher Garcia Harris Ingram Jones)
  local titles=(Engineer Manager Accountant Designer Analyst) depts=(Engineering Sales Finance Support Marketing)
  hash=$(_slapd_ssha "$OPUSH_DEMO_PASSWORD")
  local i g s
  {
    cat <<LDIF
dn: $SLAPD_SUFFIX
objectClass: dcObject
objectClass: organization
dc: example
o: Example Corp

dn: ou=people,$SLAPD_SUFFIX
objectClass: organizationalUnit
ou: people

dn: cn=opush,$SLAPD_SUFFIX
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: opush
description: opush's read-only bind DN for global address list searches
userPassword: $hash

LDIF
    _slapd_person alice Alice Archer alice@example.test "+1 555 0100" "Product Manager" Engineering "Building A, 1.01" "$hash"
    _slapd_person bob Bob Baker bob@example.test "+1 555 0101" "Sales Director" Sales "Building B, 2.02" "$hash"
    for ((i = 0; i < SLAPD_EXTRA_PEOPLE; i++)); do
      g=${given[i % 10]} s=${family[(i / 10) % 10]}
      _slapd_person "$(printf 'person%03d' "$i")" "$g" "$s" \
        "$(printf '%s.%s%s@example.test' "${g,,}" "${s,,}" "$([ "$i" -ge 100 ] && echo "$i")")" \
        "$(printf '+1 555 01%02d' $((i % 98 + 2)))" "${titles[i % 5]}" "${depts[i % 5]}" \
        "Building $((i % 3 + 1)), $((i % 7)).$((10 + i))" "$hash"
    done
  } >"$SLAPD_DIR/seed.ldif.new"
  chmod 600 "$SLAPD_DIR/seed.ldif.new"
  mv -f "$SLAPD_DIR/seed.ldif.new" "$SLAPD_DIR/seed.ldif"
}

_slapd_write_config() {
  mkdir -p "$SLAPD_DIR/run" "$SLAPD_DIR/db"
  local hash
  hash=$(_slapd_ssha "$OPUSH_DEMO_PASSWORD")
  cat >"$SLAPD_CONF.new" <<CONF
# Written by scripts/stack (slapd plug-in). Loopback only (slapd -h $SLAPD_URL).
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile $SLAPD_DIR/run/slapd.pid
argsfile $SLAPD_DIR/run/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
loglevel stats
password-hash {SSHA}

database mdb
maxsize 67108864
suffix "$SLAPD_SUFFIX"
rootdn "cn=admin,$SLAPD_SUFFIX"
rootpw $hash
directory $SLAPD_DIR/db
index objectClass eq
index uid,mail eq,sub
index cn,sn,givenName,displayName eq,sub
access to attrs=userPassword
  by self write
  by anonymous auth
  by * none
access to *
  by users read
  by * none
CONF
  chmod 640 "$SLAPD_CONF.new"
  chgrp openldap "$SLAPD_CONF.new"
  mv -f "$SLAPD_CONF.new" "$SLAPD_CONF"
}

# _slapd_seed_stale: the database was not loaded from the current seed.ldif.
_slapd_seed_stale() {
  [ "$(sha256sum <"$SLAPD_DIR/seed.ldif")" != "$(cat "$SLAPD_DIR/db/.seed.sha256" 2>/dev/null)" ]
}

# _slapd_load: (slapd stopped) a fresh database from seed.ldif.
_slapd_load() {
  rm -rf "$SLAPD_DIR/db"
  mkdir -p "$SLAPD_DIR/db"
  slapadd -q -f "$SLAPD_CONF" -l "$SLAPD_DIR/seed.ldif" >"$SLAPD_DIR/slapadd.log" 2>&1 ||
    { cat "$SLAPD_DIR/slapadd.log" >&2; die "slapd: slapadd failed"; }
  sha256sum <"$SLAPD_DIR/seed.ldif" >"$SLAPD_DIR/db/.seed.sha256"
  chown -R openldap:openldap "$SLAPD_DIR/db" "$SLAPD_DIR/run"
}

slapd_up() {
  mkdir -p "$SLAPD_DIR"
  # A system slapd or anything else on our port would answer in our place.
  if port_open 127.0.0.1 $SLAPD_PORT; then die "slapd: 127.0.0.1:$SLAPD_PORT is taken by another process"; fi
  _slapd_write_config
  _slapd_write_seed
  if _slapd_seed_stale || [ ! -f "$SLAPD_DIR/db/data.mdb" ]; then _slapd_load; fi
  chown -R openldap:openldap "$SLAPD_DIR/db" "$SLAPD_DIR/run"
  # In the background with its debug output (-d stats: connections, binds by
  # DN, searches; never passwords) in slapd.log: without a syslog daemon a
  # daemonised slapd logs nowhere.
  setsid slapd -f "$SLAPD_CONF" -h "$SLAPD_URL/" -u openldap -g openldap -n opush-slapd -d stats \
    </dev/null >>"$SLAPD_DIR/slapd.log" 2>&1 &
  sha256sum <"$SLAPD_CONF" >"$SLAPD_DIR/conf.sha256"
  if ! wait_port 127.0.0.1 $SLAPD_PORT 30; then
    tail -20 "$SLAPD_DIR/slapd.log" >&2
    die "slapd did not open port $SLAPD_PORT (see $SLAPD_DIR/slapd.log)"
  fi
}

# slapd_refresh: called by `scripts/stack up` when slapd already runs: when the
# seed or the config changed (password, SLAPD_EXTRA_PEOPLE, this script),
# restart it (reloading the directory when the seed changed).
slapd_refresh() {
  _slapd_write_config
  _slapd_write_seed
  if _slapd_seed_stale || [ "$(sha256sum <"$SLAPD_CONF")" != "$(cat "$SLAPD_DIR/conf.sha256" 2>/dev/null)" ]; then
    log "slapd: seed or config changed, restarting"
    slapd_down
    slapd_up
  fi
}

slapd_down() {
  local pidfile="$SLAPD_DIR/run/slapd.pid" i
  pid_alive "$pidfile" || return 0
  kill "$(cat "$pidfile")" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do pid_alive "$pidfile" || return 0; sleep 0.1; done
  kill -9 "$(cat "$pidfile")" 2>/dev/null || true
}

slapd_status() {
  pid_alive "$SLAPD_DIR/run/slapd.pid" && port_open 127.0.0.1 $SLAPD_PORT || return 1
  # Answering: the root DSE (anonymous) names our suffix.
  timeout 5 ldapsearch -x -LLL -H "$SLAPD_URL" -b "" -s base namingContexts 2>/dev/null |
    grep -qi "^namingContexts: $SLAPD_SUFFIX\$"
}
