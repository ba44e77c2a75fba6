#!/usr/bin/env bash
# End-to-end suite on a kind cluster: builds the proxy image and the test
# Dovecot image, creates a cluster (e2e/kind.yaml), deploys the backends
# (e2e/manifests/backends.yaml), installs the chart with e2e/values.yaml and
# runs e2e/e2e.py (Python imaplib through the proxy, kubectl port-forward to
# the management port). Needs docker (or CONTAINER_TOOL=podman), kind, kubectl,
# helm and python3 on PATH.
#
#   e2e/run.sh                 everything, then delete the cluster
#   KEEP_CLUSTER=1 e2e/run.sh  leave the cluster for inspection
#   E2E_TESTS="routing cutover" e2e/run.sh   a subset (see e2e/e2e.py)
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-switchyard-e2e}
TOOL=${CONTAINER_TOOL:-docker}
NS=switchyard
RELEASE=switchyard
# Fully qualified, so that docker and podman tag them alike and the names in
# e2e/values.yaml and e2e/manifests resolve to them inside kind.
IMAGE=docker.io/switchyard-e2e/switchyard:e2e
DOVECOT_IMAGE=docker.io/switchyard-e2e/dovecot:e2e
ARTIFACTS=${E2E_ARTIFACTS:-$PWD/e2e-artifacts}

need() {
	command -v "$1" >/dev/null 2>&1 || {
		echo "e2e: $1 is required" >&2
		exit 2
	}
}
for t in "$TOOL" kind kubectl helm python3; do need "$t"; done

log() { printf '\n=== %s\n' "$*" >&2; }

collect() {
	mkdir -p "$ARTIFACTS"
	kubectl get all,endpointslices,configmaps -A -o wide >"$ARTIFACTS/objects.txt" 2>&1 || true
	kubectl -n "$NS" describe pods >"$ARTIFACTS/describe-switchyard.txt" 2>&1 || true
	for p in $(kubectl -n "$NS" get pods -o name 2>/dev/null); do
		kubectl -n "$NS" logs --all-containers --prefix "$p" >"$ARTIFACTS/$(basename "$p").log" 2>&1 || true
	done
	kubectl -n mail logs --all-containers --prefix -l 'app in (legacy,new,stalwart)' --tail=-1 \
		>"$ARTIFACTS/backends.log" 2>&1 || true
}

cleanup() {
	local rc=$?
	if [ "$rc" -ne 0 ]; then
		log "failed ($rc): collecting logs into $ARTIFACTS"
		collect
	fi
	if [ -z "${KEEP_CLUSTER:-}" ]; then
		kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
	fi
	exit "$rc"
}
trap cleanup EXIT

log "building images with $TOOL"
"$TOOL" build -t "$IMAGE" -f Dockerfile .
"$TOOL" build -t "$DOVECOT_IMAGE" e2e/dovecot

log "creating kind cluster $CLUSTER"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
	kind create cluster --name "$CLUSTER" --config e2e/kind.yaml --wait 180s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

log "loading images"
if [ "$TOOL" = docker ]; then
	kind load docker-image --name "$CLUSTER" "$IMAGE" "$DOVECOT_IMAGE"
else
	tmp=$(mktemp -d)
	"$TOOL" save -o "$tmp/images.tar" "$IMAGE" "$DOVECOT_IMAGE"
	kind load image-archive --name "$CLUSTER" "$tmp/images.tar"
	rm -rf "$tmp"
fi

log "deploying backends"
kubectl apply -f e2e/manifests/backends.yaml
for w in deploy/legacy deploy/new deploy/redis statefulset/stalwart; do
	kubectl -n mail rollout status "$w" --timeout=180s
done

log "installing the chart"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
helm upgrade --install "$RELEASE" charts/switchyard --namespace "$NS" -f e2e/values.yaml --wait --timeout 180s
kubectl -n "$NS" rollout status "deploy/$RELEASE" --timeout=180s

log "running e2e/e2e.py"
read -r -a tests <<<"${E2E_TESTS:-}"
E2E_NAMESPACE=$NS E2E_RELEASE=$RELEASE E2E_IMAP=127.0.0.1:30143 python3 e2e/e2e.py "${tests[@]}"
log "e2e passed"
