#!/bin/sh
# Render the Redis ACL file from the committed template and per-user secret files.
#
#   render-acl.sh TEMPLATE SECRETS_DIR OUTPUT
#
# For every placeholder @<USER>_PASSWORD_HASHES@ in TEMPLATE (USER in capitals, e.g.
# GATEWAY), reads SECRETS_DIR/redis_<user>_password (lower case, e.g.
# redis_gateway_password). If that file is missing, the environment variable
# REDIS_<USER>_PASSWORD is used instead. Each non-empty line is one valid password
# (two lines while rotating); the placeholder becomes "#<sha256> #<sha256> ...".
#
# The output holds SHA-256 hashes only, never a plaintext password. Comment lines
# are dropped (Redis's aclfile has no comment syntax). The output is written to a
# temporary file first and moved into place, mode 0640, so a reader (redis-server,
# ACL LOAD) never sees a half-written file. Any missing or empty secret is an error
# and nothing is written.
#
# POSIX sh: runs on Debian (dash), Alpine (busybox, the redis image) and macOS.
# Passwords must not contain newlines; use URL-safe ones (e.g. openssl rand -hex 32)
# so they can also be embedded in REDIS_URL.
set -eu
set -f # no globbing: a password like '*' must stay literal

die() {
    echo "render-acl: $*" >&2
    exit 1
}

[ "$#" -eq 3 ] || die "usage: render-acl.sh TEMPLATE SECRETS_DIR OUTPUT"
template=$1
secrets_dir=$2
output=$3
[ -r "$template" ] || die "cannot read template $template"

sha256_hex() {
    if command -v sha256sum >/dev/null 2>&1; then
        printf '%s' "$1" | sha256sum | cut -d ' ' -f 1
    elif command -v shasum >/dev/null 2>&1; then
        printf '%s' "$1" | shasum -a 256 | cut -d ' ' -f 1
    else
        printf '%s' "$1" | openssl dgst -sha256 -r | cut -d ' ' -f 1
    fi
}

# Prints the "#hash ..." list for one user, reading one password per line.
hashes_for() {
    user_upper=$1
    user_lower=$(printf '%s' "$user_upper" | tr '[:upper:]' '[:lower:]')
    secret_file="$secrets_dir/redis_${user_lower}_password"
    if [ -f "$secret_file" ]; then
        source_text=$(cat "$secret_file")
        origin=$secret_file
    else
        eval "source_text=\${REDIS_${user_upper}_PASSWORD:-}"
        origin="\$REDIS_${user_upper}_PASSWORD"
    fi
    result=""
    # Strip CR (files edited on Windows) and split on newlines.
    newline='
'
    old_ifs=$IFS
    IFS=$newline
    for password in $(printf '%s\n' "$source_text" | tr -d '\r'); do
        [ -n "$password" ] || continue
        result="$result #$(sha256_hex "$password")"
    done
    IFS=$old_ifs
    [ -n "$result" ] || die "no password for Redis user '$user_lower' (expected $secret_file or $origin)"
    printf '%s' "${result# }"
}

users=$(sed -n 's/.*@\([A-Z0-9_]*\)_PASSWORD_HASHES@.*/\1/p' "$template" | sort -u)
[ -n "$users" ] || die "no @<USER>_PASSWORD_HASHES@ placeholder in $template"

umask 077
tmp="$output.tmp.$$"
trap 'rm -f "$tmp" "$tmp.next"' EXIT INT TERM
grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$template" > "$tmp"
for user in $users; do
    hashes=$(hashes_for "$user")
    # The replacement holds only '#', hex digits and spaces: safe in sed.
    sed "s/@${user}_PASSWORD_HASHES@/${hashes}/g" "$tmp" > "$tmp.next"
    mv "$tmp.next" "$tmp"
done
if grep -q '@[A-Z0-9_]*_PASSWORD_HASHES@' "$tmp"; then
    die "unrendered placeholder left in $output"
fi
chmod 0640 "$tmp"
mv "$tmp" "$output"
trap - EXIT INT TERM
echo "render-acl: wrote $output ($(echo "$users" | wc -w | tr -d ' ') users with passwords)" >&2
