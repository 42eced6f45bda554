#!/bin/sh
# Entrypoint of 127.0.0.1:5999/runwright-test/dind:1 (built by scripts/test-images). Busybox sh.
#
# Behaves like the official docker:dind image's dockerd-entrypoint.sh:
# - no arguments, or a first argument that is an option (-...): start dockerd, the arguments being extra dockerd
#   options.
#   * DOCKER_TLS_CERTDIR set and not empty (the image sets /certs; an unset variable also means /certs): generate a
#     CA, a server certificate and a client certificate under it, then listen on unix:///var/run/docker.sock and
#     tcp://0.0.0.0:2376 with --tlsverify.
#       $DOCKER_TLS_CERTDIR/ca/{cert,key}.pem          CA (kept across restarts of the same container)
#       $DOCKER_TLS_CERTDIR/server/{ca,cert,key}.pem   server; SANs: DNS docker, localhost, the hostname(s),
#                                                      IP 127.0.0.1 and the container's addresses, $DOCKER_TLS_SAN
#       $DOCKER_TLS_CERTDIR/client/{ca,cert,key}.pem   client (key.pem mode 0644, so any user of a shared volume
#                                                      can read it)
#     Each client file is written to a temporary name in the same directory and renamed into place, so a reader
#     never sees a half-written file; cert.pem is removed first and renamed in last, so "cert.pem exists" means
#     "the client set of this start is complete".
#     As in docker:dind, when server/{ca,cert,key}.pem exist and ca/key.pem does not, the certificates are the
#     user's: they are only verified.
#     Keys are ECDSA P-256 (PKCS#8): fast to generate (docker:dind uses RSA 4096, seconds each on a small machine),
#     accepted by Go's crypto/tls and by rustls.
#   * DOCKER_TLS_CERTDIR set to the empty string: listen on tcp://0.0.0.0:2375 without TLS (and the unix socket);
#     --tls=false says so explicitly, which spares the 15 s that dockerd 20.10 otherwise sleeps to show a warning.
#   dockerd always gets --iptables=false (the inner bridge network still gives inner containers an address) and
#   picks its storage driver by itself (vfs on an overlay root).
# - any other first argument (sh, sh -c '…' as a CI runner sends for a job, docker, dockerd …): exec it as is, so
#   the same image serves as a job image that runs the docker client.
set -eu

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
	exec "$@"
fi

_san() {
	{
		ip -o addr 2>/dev/null | awk '$3 == "inet" || $3 == "inet6" { sub(/\/.*$/, "", $4); print "IP:" $4 }'
		echo 'IP:127.0.0.1'
		{
			cat /etc/hostname 2>/dev/null || true
			hostname 2>/dev/null || true
			hostname -f 2>/dev/null || true
			hostname -s 2>/dev/null || true
			echo docker
			echo localhost
		} | sed -e '/^$/d' -e 's/^/DNS:/'
		if [ -n "${DOCKER_TLS_SAN:-}" ]; then echo "$DOCKER_TLS_SAN" | tr ', ' '\n\n' | sed '/^$/d'; fi
	} | sort -u | xargs printf '%s,' | sed 's/,$//'
}

_key() { # new private key into $1 unless it exists
	[ -s "$1" ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

_tls_generate_certs() {
	dir="$1"
	if [ -s "$dir/server/ca.pem" ] && [ -s "$dir/server/cert.pem" ] && [ -s "$dir/server/key.pem" ] \
		&& [ ! -s "$dir/ca/key.pem" ]; then
		openssl verify -CAfile "$dir/server/ca.pem" "$dir/server/cert.pem"
		return 0
	fi
	days=825
	mkdir -p "$dir/ca" "$dir/server" "$dir/client"
	# A reader waiting for cert.pem must not take one left from an earlier start (a reused volume).
	rm -f "$dir/client/cert.pem"
	work="$dir/ca/work"
	rm -rf "$work"
	mkdir -p "$work"

	if [ -s "$dir/ca/key.pem" ] || [ ! -s "$dir/ca/cert.pem" ]; then
		_key "$dir/ca/key.pem"
		openssl req -new -x509 -key "$dir/ca/key.pem" -out "$dir/ca/cert.pem" -days "$days" \
			-subj '/CN=docker:dind CA' \
			-addext 'basicConstraints=critical,CA:TRUE' \
			-addext 'keyUsage=critical,keyCertSign,cRLSign' \
			-addext 'subjectKeyIdentifier=hash'
	fi

	# server (its certificate is made again at every start: addresses change)
	_key "$dir/server/key.pem"
	openssl req -new -key "$dir/server/key.pem" -out "$work/server.csr" -subj '/CN=docker:dind server'
	cat >"$work/server.cnf" <<-EOF
		[ x509_exts ]
		basicConstraints = critical,CA:FALSE
		keyUsage = critical,digitalSignature,keyEncipherment
		extendedKeyUsage = serverAuth
		subjectKeyIdentifier = hash
		authorityKeyIdentifier = keyid,issuer
		subjectAltName = $(_san)
	EOF
	openssl x509 -req -in "$work/server.csr" -CA "$dir/ca/cert.pem" -CAkey "$dir/ca/key.pem" -CAcreateserial \
		-CAserial "$work/ca.srl" -out "$dir/server/cert.pem" -days "$days" \
		-extfile "$work/server.cnf" -extensions x509_exts 2>/dev/null
	cp "$dir/ca/cert.pem" "$dir/server/ca.pem"
	openssl verify -CAfile "$dir/server/ca.pem" "$dir/server/cert.pem"

	# client: everything is made under $work first, then renamed into the client directory file by file
	_key "$work/client-key.pem"
	chmod 0644 "$work/client-key.pem"
	openssl req -new -key "$work/client-key.pem" -out "$work/client.csr" -subj '/CN=docker:dind client'
	cat >"$work/client.cnf" <<-EOF
		[ x509_exts ]
		basicConstraints = critical,CA:FALSE
		keyUsage = critical,digitalSignature,keyEncipherment
		extendedKeyUsage = clientAuth
		subjectKeyIdentifier = hash
		authorityKeyIdentifier = keyid,issuer
	EOF
	openssl x509 -req -in "$work/client.csr" -CA "$dir/ca/cert.pem" -CAkey "$dir/ca/key.pem" -CAcreateserial \
		-CAserial "$work/ca.srl" -out "$work/client-cert.pem" -days "$days" \
		-extfile "$work/client.cnf" -extensions x509_exts 2>/dev/null
	openssl verify -CAfile "$dir/ca/cert.pem" "$work/client-cert.pem"
	for f in key ca cert; do
		case $f in
		key) src="$work/client-key.pem" ;;
		ca) src="$dir/ca/cert.pem" ;;
		cert) src="$work/client-cert.pem" ;;
		esac
		# same directory, so the rename is atomic even when the client directory is a volume of its own
		cp "$src" "$dir/client/.$f.pem.tmp"
		chmod 0644 "$dir/client/.$f.pem.tmp"
		mv -f "$dir/client/.$f.pem.tmp" "$dir/client/$f.pem"
	done
	rm -rf "$work"
}

if [ -z "${DOCKER_TLS_CERTDIR+set}" ]; then DOCKER_TLS_CERTDIR=/certs; fi

# cgroup v1 with the host's /sys/fs/cgroup mounted in (the way this image runs without --privileged): left alone,
# the inner daemon would put its containers beside this container (/docker/<inner id>), outside its limits, and
# killing this container would leave their empty cgroups behind. Nest them under this container's own cgroup
# instead, which the outer runtime removes with everything below it. An explicit --cgroup-parent wins.
case " $* " in
*" --cgroup-parent"*) ;;
*)
	own="$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3; exit }' /proc/self/cgroup 2>/dev/null || true)"
	if [ -n "$own" ] && [ "$own" != / ] && [ -d "/sys/fs/cgroup/memory$own" ]; then
		set -- --cgroup-parent="$own/dind" "$@"
	fi
	;;
esac

if [ -n "$DOCKER_TLS_CERTDIR" ]; then
	_tls_generate_certs "$DOCKER_TLS_CERTDIR"
	set -- dockerd \
		--host=unix:///var/run/docker.sock \
		--host=tcp://0.0.0.0:2376 \
		--tlsverify \
		--tlscacert "$DOCKER_TLS_CERTDIR/server/ca.pem" \
		--tlscert "$DOCKER_TLS_CERTDIR/server/cert.pem" \
		--tlskey "$DOCKER_TLS_CERTDIR/server/key.pem" \
		--iptables=false \
		"$@"
else
	set -- dockerd \
		--host=unix:///var/run/docker.sock \
		--host=tcp://0.0.0.0:2375 \
		--tls=false \
		--iptables=false \
		"$@"
fi
exec "$@"
