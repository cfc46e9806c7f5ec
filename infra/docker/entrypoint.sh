#!/bin/sh
# Container entrypoint of the terrarium-webchat image (gateway, worker, demo agent).
#
# Secrets arrive as files (compose `secrets:`, Kubernetes, systemd credentials). For each
# NAME below, if NAME_FILE is set, NAME is exported with that file's content (trailing
# newlines dropped) and NAME_FILE is unset, then the command runs. Setting both NAME and
# NAME_FILE is an error, as is an unreadable file. Only these names are read this way,
# so variables that legitimately end in _FILE (SSL_CERT_FILE) are left alone.
set -eu

secret_names="CHAT_PASSWORD REDIS_URL ARQ_REDIS_URL METRICS_TOKEN AGENT_API_KEY SEARCH_API_KEY GITHUB_TOKEN"

for name in $secret_names; do
    eval "file=\${${name}_FILE:-}"
    [ -n "$file" ] || continue
    eval "already=\${${name}+set}"
    if [ "${already:-}" = set ]; then
        echo "entrypoint: both $name and ${name}_FILE are set; keep one" >&2
        exit 64
    fi
    if [ ! -r "$file" ]; then
        echo "entrypoint: ${name}_FILE=$file is not readable by uid $(id -u)" >&2
        exit 66
    fi
    value=$(cat "$file")
    export "$name=$value"
    unset "${name}_FILE"
done

exec "$@"
