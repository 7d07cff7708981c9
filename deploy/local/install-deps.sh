#!/usr/bin/env bash
# The system tools `make test` needs, installed with apt-get when missing (Debian/Ubuntu):
#   java, mvn    Java 17 and Maven: the local Kafka's jars (deploy/local/kafka.sh)
#   prometheus, promtool   Debian's prometheus: alert-rule tests and the end-to-end scrape test
#   chromium     headless Chromium: the pre-flight report's screenshot test
#   openssl      throw-away certificates for the TLS/SASL end-to-end test (make-certs.sh)
#   go           downloads the KEDA and Prometheus Operator CRDs the manifest tests validate
#                against (deploy/k8s/crd_schemas.py, `make crd-schemas`)
#   make
# Called by `make test` (its `deps` prerequisite) and by .ci/run; `install-deps.sh run` (make
# run) asks only for what running the gate needs: Java, Maven and make. When nothing is missing it
# prints nothing and exits 0 at once. Otherwise it runs apt-get update and apt-get install
# (non-interactive, --no-install-recommends, --no-upgrade: nothing installed is touched) as
# root or through passwordless sudo; when it can do neither, it prints the one command to run
# and exits 1.
set -euo pipefail

printf -v self %q "$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
say() { echo "install-deps.sh: $*" >&2; }

# need TOOL[|OTHER-NAME] PACKAGE: the Debian package that provides the command
need() {
  local names=$1 package=$2 name
  for name in ${names//|/ }; do
    command -v "$name" >/dev/null 2>&1 && return 0
  done
  missing+=("${names%%|*}")
  [[ " ${packages[*]} " == *" $package "* ]] || packages+=("$package")
}
scan() {
  missing=() packages=()
  need java openjdk-17-jre-headless
  need mvn maven
  need make make
  [[ $mode == run ]] && return 0
  need prometheus prometheus
  need promtool prometheus
  need "chromium|chromium-browser" chromium
  need openssl openssl
  need go golang-go
}

mode=${1:-test}
if [[ $mode != run && $mode != test ]]; then
  say "usage: install-deps.sh [run|test]   (test, the default: everything make test needs)"
  exit 2
fi

scan
((${#missing[@]})) || exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  say "missing ${missing[*]}, and there is no apt-get here: install them with your system's" \
      "package manager (Debian names: ${packages[*]})"
  exit 1
fi

if ((EUID == 0)); then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  say "missing ${missing[*]} (Debian packages: ${packages[*]}); installing them needs root."
  if command -v sudo >/dev/null 2>&1; then
    say "Run:  sudo $self"
  else
    say "Run as root:  $self"
  fi
  exit 1
fi

apt() { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q "$@"; }

say "missing ${missing[*]}: installing them with apt-get"
apt update
# Java 17 where the release has it (Debian 12, Ubuntu 22.04/24.04), else the release's default
# JRE (Debian 13 has 21; Kafka 4.1 runs on 17 and later).
for i in "${!packages[@]}"; do
  if [[ ${packages[i]} == openjdk-17-jre-headless ]] &&
     ! apt-cache show openjdk-17-jre-headless >/dev/null 2>&1; then
    packages[i]=default-jre-headless
  fi
done
apt install -y --no-install-recommends --no-upgrade "${packages[@]}"

scan
if ((${#missing[@]})); then
  say "apt-get installed, but still not on PATH: ${missing[*]}"
  exit 1
fi
