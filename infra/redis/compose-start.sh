#!/bin/sh
# Start command of the redis service in compose.yaml (official redis:7 Alpine image).
#
# Runs as root for three steps, then the image's entrypoint drops to the redis user:
# 1. render the ACL file from the template and the password secrets, into a tmpfs;
# 2. copy the TLS key there, owned by redis with mode 0600 (secrets are bind mounts
#    with the host's ownership, which the redis user may not be able to read);
# 3. exec docker-entrypoint.sh redis-server with infra/redis/redis.conf, overriding
#    only the paths that differ inside the container.
set -eu

# The container has no CAP_DAC_OVERRIDE or CAP_FOWNER (cap_drop: ALL): root may write in
# the tmpfs and change modes only while it owns them, so everything is written first and
# the directory is handed to redis last.
run=/run/redis
# private_copy SRC DST: DST owned by redis, mode 0600 (mode set while root still owns it).
private_copy() {
    cp "$1" "$2"
    chmod 0600 "$2"
    chown redis:redis "$2"
}
mkdir -p "$run"
chmod 0750 "$run"
sh /etc/redis/render-acl.sh /etc/redis/users.acl.template /run/secrets "$run/users.acl"
chown redis:redis "$run/users.acl"
private_copy /run/secrets/redis_tls_key "$run/server.key"
chown redis:redis "$run"

exec docker-entrypoint.sh redis-server /etc/redis/redis.conf \
    --dir /data \
    --aclfile "$run/users.acl" \
    --tls-cert-file /run/secrets/redis_tls_cert \
    --tls-key-file "$run/server.key" \
    --tls-ca-cert-file /run/secrets/redis_tls_ca \
    --pidfile "$run/redis-server.pid"
