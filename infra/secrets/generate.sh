#!/bin/sh
# Create the secret files compose.yaml expects, with random values, and the Redis TLS
# certificates. Existing files are kept, so re-running only fills in what is missing.
#
#   infra/secrets/generate.sh [-d DIR] [REDIS_SAN]...
#
#   -d DIR     where to write (default: this directory; compose reads
#              ${TERRARIUM_SECRETS_DIR:-./infra/secrets})
#   REDIS_SAN  extra names/addresses for the Redis server certificate, e.g. the VPS's
#              public name when the worker connects from another host
#
# DIR is made 0700; the files in it 0644, because the containers read them as their
# own non-root users through bind mounts (the directory is what keeps other host users
# out). Formats: README.md beside this script.
set -eu

die() {
    echo "generate: $*" >&2
    exit 1
}

here=$(cd "$(dirname "$0")" && pwd)
dir=$here
while getopts "d:h" opt; do
    case $opt in
        d) dir=$OPTARG ;;
        h) sed -n '2,17p' "$0"; exit 0 ;;
        *) die "usage: generate.sh [-d DIR] [REDIS_SAN]..." ;;
    esac
done
shift $((OPTIND - 1))
command -v openssl >/dev/null 2>&1 || die "openssl not found"

mkdir -p "$dir"
chmod 0700 "$dir"

random_hex() {
    openssl rand -hex "$1"
}

# put NAME VALUE: write DIR/NAME unless it exists.
put() {
    if [ -e "$dir/$1" ]; then
        echo "generate: keeping $1" >&2
    else
        (umask 077 && printf '%s\n' "$2" > "$dir/$1")
        chmod 0644 "$dir/$1"
        echo "generate: wrote $1" >&2
    fi
}

first_line() {
    head -n 1 "$dir/$1"
}

# Visitor access code(s): comma-separated, all valid at once (rotation).
put chat_password "$(random_hex 9)"
put metrics_token "$(random_hex 32)"
put grafana_admin_password "$(random_hex 16)"
for user in admin gateway worker ops; do
    put "redis_${user}_password" "$(random_hex 32)"
done
# Hex passwords need no URL escaping.
put gateway_redis_url "rediss://gateway:$(first_line redis_gateway_password)@redis:6380/0"
put worker_redis_url "rediss://worker:$(first_line redis_worker_password)@redis:6380/0"
# compose profile `cluster`: the same users; any node will do, the client finds the rest.
put gateway_cluster_redis_url \
    "rediss://gateway:$(first_line redis_gateway_password)@redis-node-1:6380/0"
put worker_cluster_redis_url \
    "rediss://worker:$(first_line redis_worker_password)@redis-node-1:6380/0"
put redis_exporter_passwords.json \
    "{\"rediss://redis:6380\": \"$(first_line redis_ops_password)\"}"

# The compose profile `cluster`'s node names: clients check them against the server
# certificate (the nodes announce host names), so every certificate carries them.
cluster_nodes="redis-node-1 redis-node-2 redis-node-3 redis-node-4 redis-node-5 redis-node-6"
if [ -e "$dir/redis-tls/server.crt" ]; then
    echo "generate: keeping redis-tls/ (run infra/redis/gen-certs.sh to re-issue)" >&2
    [ -e "$dir/redis-tls/node.crt" ] || echo "generate: no redis-tls/node.crt: the compose" \
        "profile 'cluster' needs it and the node names in server.crt (docs/cluster.md)" >&2
else
    # Redis requires a client certificate (tls-auth-clients yes): one per ACL user, and
    # `node` for cluster nodes talking to each other (cluster bus, replication).
    # shellcheck disable=SC2086 # the node names are meant to split
    sh "$here/../redis/gen-certs.sh" -c worker -c gateway -c ops -c node "$dir/redis-tls" \
        $cluster_nodes "$@"
    chmod 0644 "$dir/redis-tls/server.key" "$dir/redis-tls/worker.key" \
        "$dir/redis-tls/gateway.key" "$dir/redis-tls/ops.key" "$dir/redis-tls/node.key"
fi
