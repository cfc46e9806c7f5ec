#!/bin/sh
# Start command of each redis-node-N service of compose.yaml's `cluster` profile
# (official redis:7 Alpine image, infra/redis mounted read-only at /etc/redis/infra).
#
# As compose-start.sh for the single Redis, runs as root for the set-up, then the
# image's entrypoint drops to the redis user:
# 1. render the ACL file from the template and the password secrets, into a tmpfs
#    (every node renders the same file from the same secrets: one set of users);
# 2. copy the server and node TLS keys there, owned by redis, mode 0600;
# 3. write auth.conf (masteruser/masterauth: a replica logs in to its master as admin),
#    mode 0600, so the password is never on a command line;
# 4. exec redis-server with redis.conf, then cluster/node.conf, then auth.conf, and this
#    node's announced host name (NODE_HOSTNAME, which the server certificate names).
set -eu

[ -n "${NODE_HOSTNAME:-}" ] || { echo "node-start: NODE_HOSTNAME is not set" >&2; exit 64; }
src=/etc/redis/infra
# No CAP_DAC_OVERRIDE or CAP_FOWNER here (cap_drop: ALL): write everything while root owns
# the tmpfs, hand the directory to redis last.
run=/run/redis
# private_copy SRC DST: DST owned by redis, mode 0600 (mode set while root still owns it).
private_copy() {
    cp "$1" "$2"
    chmod 0600 "$2"
    chown redis:redis "$2"
}
mkdir -p "$run"
chmod 0750 "$run"
sh "$src/render-acl.sh" "$src/users.acl" /run/secrets "$run/users.acl"
chown redis:redis "$run/users.acl"
private_copy /run/secrets/redis_tls_key "$run/server.key"
private_copy /run/secrets/redis_tls_node_key "$run/node.key"

admin_password=$(head -n 1 /run/secrets/redis_admin_password | tr -d '\r')
[ -n "$admin_password" ] || { echo "node-start: empty redis_admin_password" >&2; exit 65; }
(umask 077 && printf 'masteruser admin\nmasterauth %s\n' "$admin_password" > "$run/auth.conf")
chown redis:redis "$run/auth.conf"
chown redis:redis "$run"

exec docker-entrypoint.sh redis-server "$src/redis.conf" \
    --include "$src/cluster/node.conf" \
    --include "$run/auth.conf" \
    --cluster-announce-hostname "$NODE_HOSTNAME" \
    --dir /data \
    --aclfile "$run/users.acl" \
    --tls-cert-file /run/secrets/redis_tls_cert \
    --tls-key-file "$run/server.key" \
    --tls-ca-cert-file /run/secrets/redis_tls_ca \
    --tls-client-cert-file /run/secrets/redis_tls_node_cert \
    --tls-client-key-file "$run/node.key" \
    --pidfile "$run/redis-server.pid"
