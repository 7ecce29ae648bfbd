# shellcheck shell=bash
# scripts/stack plug-in: one Apache Cassandra 5.0 node on 127.0.0.1:9042 with
# password authentication (superuser cassandra/cassandra, role `opush` with
# password $OPUSH_CASSANDRA_PASSWORD, default opush-test), 1 GiB heap, state in
# $STACK_DIR/cassandra. Conflicts with cassandra-cluster (same address and ports).
# shellcheck source=../cassandra/node.sh
. "$(dirname "${BASH_SOURCE[0]}")/../cassandra/node.sh"

CASS1_DIR="$STACK_DIR/cassandra"

cassandra_install() {
    cass_fetch_jars "$CASS1_DIR/lib"
}

cassandra_up() {
    if cass_pid_alive "$CASS1_DIR/node" && cass_login_ok 127.0.0.1; then return 0; fi
    if [ -f "$STACK_DIR/cassandra-cluster/node1/pid" ] && cass_pid_alive "$STACK_DIR/cassandra-cluster/node1"; then
        die "cassandra: cassandra-cluster is running on 127.0.0.1; run scripts/stack down cassandra-cluster first"
    fi
    cassandra_install
    local t0=$SECONDS
    cass_configure "$CASS1_DIR/node" 127.0.0.1 127.0.0.1:7000 -9223372036854775808 true
    cass_start "$CASS1_DIR/node" "$CASS1_DIR/lib" 127.0.0.1
    cass_wait_ready "$CASS1_DIR/node" 127.0.0.1
    cass_create_role 127.0.0.1
    log "cassandra: up on 127.0.0.1:9042 in $((SECONDS - t0))s"
}

cassandra_down() {
    cass_stop "$CASS1_DIR/node"
    log "cassandra: down"
}

cassandra_status() {
    cass_pid_alive "$CASS1_DIR/node" && cass_login_ok 127.0.0.1
}
