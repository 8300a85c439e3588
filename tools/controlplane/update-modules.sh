#!/usr/bin/env bash
# Regenerates the four Go modules (go.mod + go.sum) from versions.json.
# Run by hand after changing a version in versions.json, then commit the result.
# The build itself (harness/devcluster/build.ts) never runs `go get`: it builds from
# the committed go.mod/go.sum files.
set -euo pipefail
cd "$(dirname "$0")"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

ver() { node -p "require('./versions.json').$1"; }
K8S=$(ver kubernetes)
ETCD=$(ver etcd)
HELM=$(ver helm)
HELM4=$(ver helm4)
COREDNS=$(ver coredns)
STAGING=v0.${K8S#v1.}

echo "== kubernetes $K8S (staging modules at $STAGING)"
gomod=$(go mod download -json "k8s.io/kubernetes@$K8S" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).GoMod))')
# Only the staging modules: required at exactly v0.0.0 (not k8s.io/utils,
# kube-openapi, json, whose pseudo-versions merely start with v0.0.0-).
mapfile -t staging < <(grep -E '^[[:space:]]*k8s\.io/[^[:space:]]+ v0\.0\.0$' "$gomod" | awk '{print $1}' | sort -u)
echo "   ${#staging[@]} staging modules"
(
  cd kubernetes
  rm -f go.mod go.sum
  {
    echo "module datakey-operator/tools/controlplane/kubernetes"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes $K8S"
    echo
    echo "replace ("
    for m in "${staging[@]}"; do echo "	$m => $m $STAGING"; done
    echo ")"
  } > go.mod
  go get -tool \
    "k8s.io/kubernetes/cmd/kube-apiserver@$K8S" \
    "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S" \
    "k8s.io/kubernetes/cmd/kubectl@$K8S" \
    "k8s.io/kubernetes/cmd/kube-scheduler@$K8S" \
    "k8s.io/kubernetes/cmd/kubelet@$K8S" \
    "k8s.io/kubernetes/cmd/kube-proxy@$K8S"
  go mod tidy
)

# A module of its own whose only content is one tool at a pinned version.
tool_module() { # DIR PACKAGE@VERSION
  echo "== $1 ${2##*@}"
  (
    cd "$1"
    rm -f go.mod go.sum
    printf 'module datakey-operator/tools/controlplane/%s\n\ngo 1.24.0\n' "$1" > go.mod
    go get -tool "$2"
    go mod tidy
  )
}
tool_module etcd "go.etcd.io/etcd/server/v3@$ETCD"
tool_module helm "helm.sh/helm/v3/cmd/helm@$HELM"
tool_module helm4 "helm.sh/helm/v4/cmd/helm@$HELM4"
tool_module coredns "github.com/coredns/coredns@$COREDNS"
echo "done: review and commit tools/controlplane/*/go.mod and go.sum"
