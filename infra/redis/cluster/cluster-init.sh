#!/bin/sh
# One-shot `cluster-init` service of compose.yaml's `cluster` profile: join the
# redis-node-N services into one cluster with `redis-cli --cluster create`.
#
#   CLUSTER_NODES="redis-node-1:6380 ... redis-node-6:6380"  (masters first)
#   CLUSTER_REPLICAS=1                                       (replicas per master)
#   SECRETS_DIR=/run/secrets      redis_admin_password, redis_tls_ca, redis_tls_node_cert,
#                                 redis_tls_node_key (compose's secret names)
#
# Idempotent: when the first node already belongs to a cluster that serves every slot,
# it only prints the cluster's state and exits 0, so `docker compose up` can run it at
# every start. A half-made cluster (some nodes joined, slots missing) is an error for an
# operator to look at (`redis-cli --cluster check`, docs/cluster.md); it is never reset.
# Logs in as admin over TLS with the node client certificate; the password travels in
# REDISCLI_AUTH, never on a command line.
set -eu

: "${CLUSTER_NODES:?list the nodes as host:port}"
replicas=${CLUSTER_REPLICAS:-1}
secrets=${SECRETS_DIR:-/run/secrets}
REDISCLI_AUTH=$(head -n 1 "$secrets/redis_admin_password" | tr -d '\r')
export REDISCLI_AUTH

cli() {
    redis-cli --tls --cacert "$secrets/redis_tls_ca" \
        --cert "$secrets/redis_tls_node_cert" --key "$secrets/redis_tls_node_key" \
        --user admin --no-auth-warning "$@"
}

# shellcheck disable=SC2086 # the list is meant to split on spaces
set -- $CLUSTER_NODES
first_host=${1%:*}
first_port=${1##*:}
info=$(cli -h "$first_host" -p "$first_port" cluster info)
known=$(printf '%s\n' "$info" | tr -d '\r' | sed -n 's/^cluster_known_nodes://p')
state=$(printf '%s\n' "$info" | tr -d '\r' | sed -n 's/^cluster_state://p')
if [ "${known:-1}" -gt 1 ]; then
    if [ "$state" = ok ]; then
        echo "cluster-init: the cluster exists ($known nodes, state ok); nothing to do"
        exit 0
    fi
    echo "cluster-init: $1 already knows $known nodes but the state is '$state':" \
        "check it with redis-cli --cluster check (docs/cluster.md)" >&2
    exit 1
fi

echo "cluster-init: creating a cluster of $# nodes, $replicas replica(s) per master"
cli --cluster create "$@" --cluster-replicas "$replicas" --cluster-yes
cli --cluster check "$1"
