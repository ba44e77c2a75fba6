#!/usr/bin/env bash
# Installs what building, testing and the demo need, from Debian's packages.
# Only missing packages are installed; safe to run repeatedly.
set -euo pipefail

PKGS=(
	# build
	build-essential cmake pkg-config clang-format
	libuv1-dev libssl-dev libhiredis-dev libpq-dev libjansson-dev
	libhttp-parser-dev libcurl4-openssl-dev libyaml-dev libcmocka-dev
	# tests and demo: real servers and real clients
	python3 python3-pytest openssl curl procps iproute2
	dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-managesieved
	dovecot-submissiond redis-server postgresql sieve-connect
	# http tests (issue 11)
	nginx-light radicale python3-websockets
)

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO="sudo"
fi
echo "installing: ${missing[*]}" >&2
# Debian's packages start their daemons when a service manager exists; the
# tests start their own copies on loopback, so keep the system ones off.
$SUDO sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
