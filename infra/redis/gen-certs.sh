#!/bin/sh
# Create a private CA, a Redis server certificate and optional client certificates.
#
#   gen-certs.sh [-d DAYS] [-c CLIENT]... OUTDIR [SAN]...
#
#   OUTDIR   where files go (created, mode 0700). An existing ca.key/ca.crt there is
#            reused, so re-running issues a new server certificate from the same CA
#            and clients keep trusting it.
#   SAN      extra server names: DNS names or IPv4/IPv6 addresses the clients use to
#            reach Redis (e.g. redis.example.org 203.0.113.7). Always included:
#            redis (the compose service), localhost, 127.0.0.1, ::1.
#   -c NAME  also issue a client certificate NAME.crt/NAME.key (CN=NAME, clientAuth)
#            for mutual TLS, e.g. -c worker. Repeatable.
#   -d DAYS  validity of server and client certificates (default 397). The CA is
#            valid for 10 years.
#
# Output: ca.crt ca.key server.crt server.key [NAME.crt NAME.key]. Keys are EC P-256,
# mode 0600. Keep ca.key offline once the certificates are issued. Copy ca.crt to
# every client (REDIS_URL ...?ssl_ca_certs=/path/ca.crt), server.* to /etc/redis/tls/.
set -eu

die() {
    echo "gen-certs: $*" >&2
    exit 1
}

days=397
clients=""
while getopts "d:c:h" opt; do
    case $opt in
        d) days=$OPTARG ;;
        c) clients="$clients $OPTARG" ;;
        h) sed -n '2,20p' "$0"; exit 0 ;;
        *) die "usage: gen-certs.sh [-d DAYS] [-c CLIENT]... OUTDIR [SAN]..." ;;
    esac
done
shift $((OPTIND - 1))
[ "$#" -ge 1 ] || die "usage: gen-certs.sh [-d DAYS] [-c CLIENT]... OUTDIR [SAN]..."
outdir=$1
shift
command -v openssl >/dev/null 2>&1 || die "openssl not found"

umask 077
mkdir -p "$outdir"
chmod 0700 "$outdir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
    chmod 0600 "$1"
}

if [ -f "$outdir/ca.key" ] && [ -f "$outdir/ca.crt" ]; then
    echo "gen-certs: reusing CA in $outdir" >&2
else
    new_key "$outdir/ca.key"
    openssl req -x509 -new -key "$outdir/ca.key" -sha256 -days 3650 \
        -subj "/O=terrarium-webchat/CN=terrarium-webchat Redis CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" \
        -out "$outdir/ca.crt"
fi

# subjectAltName list: DNS:... for names, IP:... for addresses.
san="DNS:redis,DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do
    case $name in
        *:*) san="$san,IP:$name" ;;          # IPv6
        *[!0-9.]*) san="$san,DNS:$name" ;;   # anything but digits and dots
        *) san="$san,IP:$name" ;;            # IPv4
    esac
done

# issue NAME CN EXTFILE: key + CSR + certificate signed by the CA.
issue() {
    new_key "$outdir/$1.key"
    openssl req -new -key "$outdir/$1.key" -subj "/O=terrarium-webchat/CN=$2" \
        -out "$work/$1.csr"
    openssl x509 -req -in "$work/$1.csr" -CA "$outdir/ca.crt" -CAkey "$outdir/ca.key" \
        -CAcreateserial -CAserial "$work/ca.srl" -sha256 -days "$days" \
        -extfile "$3" -out "$outdir/$1.crt" 2>/dev/null
    chmod 0644 "$outdir/$1.crt"
}

cat > "$work/server.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san
EOF
issue server redis "$work/server.ext"

cat > "$work/client.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
EOF
for client in $clients; do
    issue "$client" "$client" "$work/client.ext"
done

chmod 0644 "$outdir/ca.crt"
echo "gen-certs: wrote $outdir (server SAN: $san${clients:+; clients:$clients})" >&2
