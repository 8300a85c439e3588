#!/usr/bin/env bash
# Host packages the local cluster's node needs: Debian's containerd + runc, the
# CNI plugins, iptables and iproute2 (kube-proxy's rules, the bridge), a static
# busybox for the test images, buildah to build the Dockerfile (npm run
# image:build), Lua 5.4 to run the Argo CD health checks in docs/argocd/ in
# their tests, and for the official-SDK and instance-SDK tests openssl (reads
# client key files), python3-venv (the Python SDKs' own venvs), a JDK and Maven
# (the Java SDKs). Installs only what is missing, and only as root with
# apt-get; otherwise says what to install.
set -euo pipefail
node_pkgs=(containerd runc containernetworking-plugins iptables iproute2 busybox-static buildah lua5.4
  openssl python3-venv openjdk-17-jdk-headless maven)
missing=()
for p in "${node_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
venv_probe=$(mktemp -d)
python3 -m venv "$venv_probe/venv" >/dev/null 2>&1 || missing+=(python3-venv)
rm -rf "$venv_probe"
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "the local node, image build, health-check and SDK tests need: ${missing[*]} (apt-get install as root); without them cluster:up starts no node, image:build fails and the Argo CD health and SDK tests fail" >&2
fi
