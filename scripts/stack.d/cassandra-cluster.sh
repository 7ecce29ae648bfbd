# shellcheck shell=bash
# scripts/stack plug-in: three Apache Cassandra 5.0 nodes on 127.0.0.1, .2, .3
# (same ports on each address, as ccm does) for the multi-node fault tests.
# State in $STACK_DIR/cassandra-cluster/node{1,2,3}. Conflicts with the
# single `cassandra` node (same 127.0.0.1 ports). 1 GiB heap per node.
# shellcheck source=../cassandra/node.sh
. "$(dirname "${BASH_SOURCE[0]}")/../cassandra/node.sh"

CCL_DIR="$STACK_DIR/cassandra-cluster"
CCL_SEEDS="127.0.0.1:7000,127.0.0.2:7000,127.0.0.3:7000"
CCL_TOKENS=(-9223372036854775808 -3074457345618258603 3074457345618258602)

cassandra_cluster_install() {
    cass_fetch_jars "$CCL_DIR/lib"
}

cassandra_cluster_up() {
    if cassandra_cluster_status; then return 0; fi
    if cass_pid_alive "$STACK_DIR/cassandra/node"; then
        die "cassandra-cluster: single cassandra node is running on 127.0.0.1; run scripts/stack down cassandra first"
    fi
    cassandra_cluster_install
    local t0=$SECONDS i
    for i in 1 2 3; do
        cass_configure "$CCL_DIR/node$i" "127.0.0.$i" "$CCL_SEEDS" "${CCL_TOKENS[$((i - 1))]}" false
        cass_start "$CCL_DIR/node$i" "$CCL_DIR/lib" "127.0.0.$i" -Dcassandra.ring_delay_ms=5000
    done
    for i in 1 2 3; do
        cass_wait_ready "$CCL_DIR/node$i" "127.0.0.$i"
    done
    # The auth keyspace must survive two stopped nodes: replicate it everywhere.
    cass_create_role 127.0.0.1 \
        "ALTER KEYSPACE system_auth WITH replication = {'class': 'NetworkTopologyStrategy', 'datacenter1': 3}"
    log "cassandra-cluster: up on 127.0.0.1-3:9042 in $((SECONDS - t0))s"
}

# cassandra_cluster_down: stop every node, or only the nodes listed in
# $CASSANDRA_CLUSTER_NODES (e.g. "2 3", for fault tests); `up` restarts them.
cassandra_cluster_down() {
    local i
    for i in ${CASSANDRA_CLUSTER_NODES:-1 2 3}; do
        case "$i" in 1|2|3) cass_stop "$CCL_DIR/node$i" ;; *) die "cassandra-cluster: no node $i" ;; esac
    done
    log "cassandra-cluster: stopped node(s) ${CASSANDRA_CLUSTER_NODES:-1 2 3}"
}

cassandra_cluster_status() {
    local i
    for i in 1 2 3; do
        cass_pid_alive "$CCL_DIR/node$i" && cass_login_ok "127.0.0.$i" || return 1
    done
}
