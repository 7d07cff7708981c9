#!/usr/bin/env bash
# A throw-away CA, a broker certificate and a client certificate for the local secure broker.
#   deploy/local/make-certs.sh DIR [CLIENT_NAME]
# Writes DIR/ca.crt, ca.key, broker.crt, broker.key (SAN IP:127.0.0.1, DNS:localhost),
# client.crt, client.key (CN=CLIENT_NAME, default outbound-gate). Keys are unencrypted PKCS#8,
# as Kafka's PEM keystore and Python's ssl module both read them. For tests and local use only.
set -euo pipefail
dir=${1:?usage: $0 DIR [CLIENT_NAME]}
client=${2:-outbound-gate}
mkdir -p "$dir"
cd "$dir"
umask 077
days=30

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=outbound-gate local CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.crt 2>/dev/null

issue() {  # issue NAME SUBJECT EXTENSIONS
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
    -days "$days" -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

issue broker "/CN=localhost" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
issue client "/CN=$client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
rm -f ca.srl
chmod 644 ca.crt broker.crt client.crt
echo "$dir"
