# shellcheck shell=bash
# Helpers shared by scripts/stack.d/cassandra.sh and cassandra-cluster.sh:
# fetch the cassandra-all jars with Maven, write one node's configuration,
# start/stop it as a plain background JVM (no systemd) and wait until CQL
# password logins work. Sourced after scripts/lib.sh (uses log, die, wait_port).
# It must not touch anything outside the directories it is given.

CASS_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CASS_JAVA="${CASSANDRA_JAVA:-/usr/lib/jvm/java-17-openjdk-amd64/bin/java}"
[ -x "$CASS_JAVA" ] || CASS_JAVA=/usr/bin/java
CASS_START_TIMEOUT="${CASSANDRA_START_TIMEOUT:-240}"
OPUSH_CASSANDRA_PASSWORD="${OPUSH_CASSANDRA_PASSWORD:-opush-test}"

# cass_fetch_jars LIBDIR: copy cassandra-all and its runtime closure into LIBDIR (skip when present).
cass_fetch_jars() {
    local lib="$1"
    if [ -f "$lib/.complete" ]; then return 0; fi
    command -v mvn >/dev/null || apt_install maven
    "$CASS_JAVA" -version 2>&1 | grep -q '"17\.' || apt_install openjdk-17-jdk-headless
    log "cassandra: resolving cassandra-all jars into $lib (Maven)"
    rm -rf "$lib.tmp"
    mvn -B -q -f "$CASS_SCRIPTS/pom.xml" validate -Doutdir="$lib.tmp" || die "cassandra: mvn dependency copy failed"
    rm -rf "$lib" && mv "$lib.tmp" "$lib" && touch "$lib/.complete"
}

# cass_configure NODEDIR IP SEEDS TOKEN AUTO_BOOTSTRAP
cass_configure() {
    local dir="$1" ip="$2" seeds="$3" token="$4" boot="$5"
    mkdir -p "$dir/conf" "$dir/data" "$dir/logs" "$dir/tmp"
    sed -e "s/@IP@/$ip/g" -e "s/@SEEDS@/$seeds/g" -e "s/@TOKEN@/$token/g" -e "s/@AUTO_BOOTSTRAP@/$boot/g" \
        "$CASS_SCRIPTS/cassandra.yaml.in" >"$dir/conf/cassandra.yaml"
    cp "$CASS_SCRIPTS/logback.xml" "$dir/conf/logback.xml"
}

# cass_pid_alive NODEDIR
cass_pid_alive() {
    local pidf="$1/pid"
    [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null
}

# cass_start NODEDIR LIBDIR IP [EXTRA_JVM_OPT...]: start the JVM unless already running.
cass_start() {
    local dir="$1" lib="$2" ip="$3"
    shift 3
    if cass_pid_alive "$dir"; then return 0; fi
    local jamm opts=()
    jamm="$(ls "$lib"/jamm-*.jar | head -n1)"
    while IFS= read -r line; do
        case "$line" in ''|'#'*) ;; *) opts+=("$line") ;; esac
    done <"$CASS_SCRIPTS/jvm17.options"
    opts+=("-javaagent:$jamm"
        "-Dcassandra.config=file://$dir/conf/cassandra.yaml"
        "-Dcassandra.storagedir=$dir/data"
        "-Dcassandra.logdir=$dir/logs"
        "-Dlogback.configurationFile=file://$dir/conf/logback.xml"
        "-Djava.io.tmpdir=$dir/tmp" "-Djna.tmpdir=$dir/tmp"
        "$@")
    log "cassandra: starting node $ip ($dir)"
    : >"$dir/logs/stdout.log"
    rm -f "$dir/pid"
    # setsid may fork: the JVM writes its own pid file through the exec'ing shell.
    # The subshell execs, so no shell stays behind holding the caller's stdout/stderr.
    (cd "$dir" || exit 1
        MALLOC_ARENA_MAX=4 exec setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$dir/pid" \
            "$CASS_JAVA" "${opts[@]}" -cp "$dir/conf:$lib/*" org.apache.cassandra.service.CassandraDaemon \
            >>"$dir/logs/stdout.log" 2>&1 </dev/null) &
    local i
    for i in $(seq 1 50); do [ -s "$dir/pid" ] && break; sleep 0.1; done
}

# cass_wait_ready NODEDIR IP: wait for the CQL listener log line, the port and a superuser login.
cass_wait_ready() {
    local dir="$1" ip="$2" deadline=$((SECONDS + CASS_START_TIMEOUT))
    until grep -q "Starting listening for CQL clients" "$dir/logs/stdout.log" 2>/dev/null; do
        cass_pid_alive "$dir" || { tail -n 40 "$dir/logs/stdout.log" >&2; die "cassandra: node $ip died during start-up (see $dir/logs)"; }
        [ $SECONDS -lt $deadline ] || die "cassandra: node $ip not listening after ${CASS_START_TIMEOUT}s (see $dir/logs)"
        sleep 1
    done
    wait_port "$ip" 9042 $((deadline - SECONDS > 0 ? deadline - SECONDS : 1)) || die "cassandra: port $ip:9042 closed"
    # The default superuser logs in at QUORUM; the opush role (once created) at LOCAL_ONE.
    until python3 "$CASS_SCRIPTS/cql.py" "$ip" 9042 cassandra cassandra 2>/dev/null || cass_login_ok "$ip"; do
        [ $SECONDS -lt $deadline ] || die "cassandra: superuser login on $ip still failing after ${CASS_START_TIMEOUT}s"
        sleep 1
    done
}

# cass_create_role IP [STATEMENT...]: run STATEMENTs as superuser, then create the
# opush role (or reset its password when OPUSH_CASSANDRA_PASSWORD changed).
cass_create_role() {
    local ip="$1" pw="${OPUSH_CASSANDRA_PASSWORD//\'/\'\'}" i
    shift
    python3 "$CASS_SCRIPTS/cql.py" "$ip" 9042 cassandra cassandra "$@" \
        "CREATE ROLE IF NOT EXISTS opush WITH PASSWORD = '$pw' AND LOGIN = true" \
        "GRANT ALL PERMISSIONS ON ALL KEYSPACES TO opush" \
        || die "cassandra: could not create the opush role on $ip"
    # Cassandra refuses password changes closer than 5 s apart: retry a few times.
    for i in 1 2 3 4 5 6 7 8 9 10; do
        cass_login_ok "$ip" && return 0
        python3 "$CASS_SCRIPTS/cql.py" "$ip" 9042 cassandra cassandra "ALTER ROLE opush WITH PASSWORD = '$pw'" 2>/dev/null || true
        sleep 1
    done
    die "cassandra: the opush role cannot log in on $ip"
}

# cass_login_ok IP: 0 iff the opush role can log in.
cass_login_ok() {
    python3 "$CASS_SCRIPTS/cql.py" "$1" 9042 opush "$OPUSH_CASSANDRA_PASSWORD" 2>/dev/null
}

# cass_stop NODEDIR: SIGTERM, then SIGKILL after 30 s.
cass_stop() {
    local dir="$1" pid i
    cass_pid_alive "$dir" || { rm -f "$dir/pid"; return 0; }
    pid="$(cat "$dir/pid")"
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    rm -f "$dir/pid"
}
