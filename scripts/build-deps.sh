#!/usr/bin/env bash
# Install what building zdeploy needs beyond Rust: protoc, which the etcd
# client's build compiles etcd's gRPC definitions with.
set -euo pipefail
command -v protoc >/dev/null && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "build-deps.sh: please install protobuf-compiler (protoc)" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler
