#!/usr/bin/env bash
# A private CA plus a server certificate (with subjectAltName) for mosquitto
# and client certificates, with openssl. Re-running reuses the CA and skips
# certificates that exist (--force re-issues them).
#
#   ./make-certs.sh -o /etc/mosquitto/certs --host pi.local --ip 192.168.1.10 \
#       --client edge-agent --client dashboard
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: make-certs.sh [options]
  -o, --out DIR       output directory (default: ./certs)
  -d, --days N        validity of server/client certificates in days (default: 825)
  --ca-days N         validity of a new CA in days (default: 3650)
  --host NAME         DNS name of the broker, repeatable (default: hostname,
                      hostname.local, localhost); the first is the CN
  --ip ADDR           IP address of the broker, repeatable (default: 127.0.0.1)
  --client NAME       issue NAME.crt/NAME.key for a client (CN=NAME), repeatable
  --key-type rsa|ec   RSA 2048 (default, widest device support) or EC P-256
  --force             re-issue certificates that already exist (never the CA)
  -h, --help          this help
USAGE
}

die() { printf 'make-certs.sh: error: %s\n' "$*" >&2; exit 1; }

OUT=./certs
DAYS=825
CA_DAYS=3650
KEY_TYPE=rsa
FORCE=0
HOSTS=()
IPS=()
CLIENTS=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        -o | --out) OUT="${2:?}"; shift 2 ;;
        -d | --days) DAYS="${2:?}"; shift 2 ;;
        --ca-days) CA_DAYS="${2:?}"; shift 2 ;;
        --host) HOSTS+=("${2:?}"); shift 2 ;;
        --ip) IPS+=("${2:?}"); shift 2 ;;
        --client) CLIENTS+=("${2:?}"); shift 2 ;;
        --key-type) KEY_TYPE="${2:?}"; shift 2 ;;
        --force) FORCE=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

[[ "$DAYS" =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive number"
[[ "$CA_DAYS" =~ ^[1-9][0-9]*$ ]] || die "--ca-days must be a positive number"
case "$KEY_TYPE" in
    rsa) NEWKEY=(-newkey rsa:2048) ;;
    ec) NEWKEY=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    *) die "--key-type must be rsa or ec" ;;
esac
if [[ ${#HOSTS[@]} -eq 0 ]]; then
    HOSTS=("$(hostname)" "$(hostname).local" localhost)
fi
if [[ ${#IPS[@]} -eq 0 ]]; then
    IPS=(127.0.0.1)
fi
for name in "${CLIENTS[@]}"; do
    [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad client name: $name"
    [[ "$name" != ca && "$name" != server ]] || die "client name '$name' is reserved"
done

umask 077
mkdir -p "$OUT"
cd "$OUT"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

if [[ -f ca.key && -f ca.crt ]]; then
    echo "reusing CA $OUT/ca.crt"
else
    openssl req -x509 -new "${NEWKEY[@]}" -nodes -sha256 -days "$CA_DAYS" \
        -subj "/CN=edge-agent MQTT CA" -keyout ca.key -out ca.crt \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    echo "created CA $OUT/ca.crt"
fi

# issue NAME CN EXTENSIONS: NAME.key + NAME.crt signed by the CA.
issue() {
    local name="$1" cn="$2" extensions="$3"
    if [[ -f "$name.crt" && $FORCE -eq 0 ]]; then
        echo "keeping $OUT/$name.crt (--force re-issues)"
        return
    fi
    printf '%s\n' "$extensions" >"$TMP/$name.ext"
    openssl req -new "${NEWKEY[@]}" -nodes -subj "/CN=$cn" \
        -keyout "$name.key" -out "$TMP/$name.csr" 2>/dev/null
    openssl x509 -req -in "$TMP/$name.csr" -CA ca.crt -CAkey ca.key -sha256 \
        -set_serial "0x$(openssl rand -hex 16)" -days "$DAYS" \
        -extfile "$TMP/$name.ext" -out "$name.crt" 2>/dev/null
    echo "issued $OUT/$name.crt (CN=$cn, $DAYS days)"
}

san=""
for host in "${HOSTS[@]}"; do san+="DNS:$host,"; done
for ip in "${IPS[@]}"; do san+="IP:$ip,"; done
issue server "${HOSTS[0]}" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=${san%,}"

for name in "${CLIENTS[@]}"; do
    issue "$name" "$name" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
done

chmod 0644 ./*.crt
echo "done. Keep ca.key offline; give each client ca.crt and its own .crt/.key."
