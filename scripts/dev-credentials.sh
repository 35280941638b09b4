#!/usr/bin/env bash
# dev-credentials.sh DIR: throwaway credentials for a TLS + JWT server on this machine, made
# with openssl: a CA (ca.crt), a server certificate for localhost and 127.0.0.1 (server.crt,
# server.key), an Ed25519 JWT signing key's JWKS (jwks.json, kid "dev") and a JWT for the
# identity "dev" (token: issuer https://rookery.dev, audience rookery, valid one day).
# `make bench` uses them to measure TLS and auth, `scripts/examples.sh` to run the examples over
# TLS; never use them beyond this machine.
set -euo pipefail
dir="$1"
mkdir -p "$dir"
cd "$dir"
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
  -days 1 -subj /CN=rookery-dev-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
  -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 1 \
  -extfile server.ext 2>/dev/null
rm -f server.csr server.ext ca.srl ca.key

openssl genpkey -algorithm ed25519 -out jwt.key
# The raw public key is the last 32 bytes of its DER SubjectPublicKeyInfo.
x="$(openssl pkey -in jwt.key -pubout -outform DER | tail -c 32 | b64url)"
printf '{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"dev","alg":"EdDSA","use":"sig","x":"%s"}]}\n' "$x" >jwks.json
header="$(printf '{"alg":"EdDSA","typ":"JWT","kid":"dev"}' | b64url)"
payload="$(printf '{"iss":"https://rookery.dev","aud":"rookery","sub":"dev","iat":%d,"exp":%d}' \
  "$(date +%s)" "$(( $(date +%s) + 86400 ))" | b64url)"
printf '%s.%s' "$header" "$payload" >jwt.input
signature="$(openssl pkeyutl -sign -inkey jwt.key -rawin -in jwt.input | b64url)"
printf '%s.%s.%s\n' "$header" "$payload" "$signature" >token
rm -f jwt.input jwt.key
