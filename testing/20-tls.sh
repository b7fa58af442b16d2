#!/usr/bin/env bash
# 20: NBD over TLS on --listen (issue 18). Certificates made here with
# openssl: a CA, a server certificate (localhost, 127.0.0.1) and a client
# certificate. nbdinfo connects over nbds:// with libnbd's tls-certificates
# directory; a plain nbd:// client is refused (NBD_REP_ERR_TLS_REQD); with
# --tls-client-ca a client without a certificate is refused and one with a
# certificate served. Plain TCP on an address that is not loopback is
# refused at start without --insecure (0.0.0.0, and this machine's own
# non-loopback address if it has one; nothing is sent anywhere).
. "$WB_TESTING/lib.sh"

sparse backing.img 96M
sparse cache.img 32M
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

mkdir -p pki client noclient
ossl() { openssl "$@" >/dev/null 2>&1 || fail "openssl $1"; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=wb-test-CA \
	-keyout pki/ca-key.pem -out pki/ca-cert.pem
leaf() { # leaf NAME EXT: a certificate signed by the CA
	ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" -keyout "pki/$1-key.pem" -out "pki/$1.csr"
	printf '%s\n' "$2" >"pki/$1.ext"
	ossl x509 -req -in "pki/$1.csr" -CA pki/ca-cert.pem -CAkey pki/ca-key.pem -CAcreateserial -days 2 \
		-extfile "pki/$1.ext" -out "pki/$1-cert.pem"
}
leaf server "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
leaf client "extendedKeyUsage=clientAuth"
# libnbd's layout: ca-cert.pem, and client-cert.pem/client-key.pem if any.
cp pki/ca-cert.pem client/ && cp pki/client-cert.pem pki/client-key.pem client/
cp pki/ca-cert.pem noclient/

tls=(--tls-cert pki/server-cert.pem --tls-key pki/server-key.pem)
wb_start vol backing.img cache.img --reformat --listen "tcp://127.0.0.1:$port" "${tls[@]}"
json=$(nbdinfo --json --no-content "nbds://localhost:$port/vol?tls-certificates=$WB_WORK/noclient") ||
	fail "nbdinfo over nbds:// failed"
size=$(jq -er '.exports[0]["export-size"]' <<<"$json")
[ "$size" -eq $((96 << 20)) ] || fail "export-size over TLS $size"
# Data over TLS, verified both ways.
head -c 4M /dev/urandom >data.bin
nbdcopy data.bin "nbds://localhost:$port/vol?tls-certificates=$WB_WORK/noclient" || fail "nbdcopy to nbds://"
nbdcopy "nbds://localhost:$port/vol?tls-certificates=$WB_WORK/noclient" back.bin || fail "nbdcopy from nbds://"
cmp -n $((4 << 20)) back.bin data.bin || fail "data read over TLS differs"
if nbdinfo --no-content "nbd://127.0.0.1:$port/vol" >plain.out 2>&1; then
	fail "a plain client was served where TLS is required"
fi
cat plain.out
grep -qi "tls" plain.out || fail "the plain client was not told TLS is required"
# The unix socket stays plain.
nbdinfo --size "$(wb_uri vol)" >/dev/null || fail "unix socket"
wb_stop

# Client certificates required.
wb_start vol backing.img cache.img --listen "tcp://127.0.0.1:$port" "${tls[@]}" --tls-client-ca pki/ca-cert.pem
if nbdinfo --no-content "nbds://localhost:$port/vol?tls-certificates=$WB_WORK/noclient" >nocert.out 2>&1; then
	fail "a client without a certificate was served"
fi
grep -q "TLS" "$WB_LOG" || fail "no log line for the refused TLS handshake"
nbdinfo --size "nbds://localhost:$port/vol?tls-certificates=$WB_WORK/client" >/dev/null ||
	fail "a client with a certificate was refused"
wb_stop

# Plain TCP refused off loopback without --insecure, allowed on loopback.
refused() { # refused ADDR: wb-create must exit 1 naming --insecure
	local rc=0
	timeout 30 wb-create vol backing.img cache.img --listen "tcp://$1" 2>refused.err || rc=$?
	[ "$rc" -eq 1 ] && grep -q -- "--insecure" refused.err || { cat refused.err >&2; fail "plain TCP on $1: exit $rc"; }
	cat refused.err
}
refused "0.0.0.0:$port"
own=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -v '^127\.' | grep -v ':' | head -n1 || true)
if [ -n "$own" ]; then
	refused "$own:$port"
	checked="0.0.0.0 and $own"
else
	checked="0.0.0.0 (this machine has no other address)"
fi
wb_start vol backing.img cache.img --listen "tcp://127.0.0.1:$port"
nbdinfo --size "nbd://127.0.0.1:$port/vol" >/dev/null || fail "plain TCP on loopback"
wb_stop

echo "figure: nbds:// served (nbdinfo, 4 MiB nbdcopy verified); plain nbd:// refused where TLS is required"
echo "figure: with --tls-client-ca: client without certificate refused, with certificate served"
echo "figure: plain TCP refused without --insecure on $checked; loopback allowed"
