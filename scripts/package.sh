#!/usr/bin/env bash
# Build zdeploy's static (musl) binary, and a Debian package that holds it:
#   target/package/zdeploy_<version>_<arch>.deb
#   target/package/zdeploy-<version>-<arch>-linux-musl.tar.gz
# Installs what it needs (cargo-deb, musl-tools, the musl target) first.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v musl-gcc >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "package.sh: please install musl-tools" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends musl-tools
fi
./scripts/build-deps.sh
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
arch=$(uname -m)
musl="$arch-unknown-linux-musl"
rustup target list --installed | grep -qx "$musl" || rustup target add "$musl"

# One build: the static (musl) binary, which needs no libc at all, goes both
# into the .deb and into the tarball for distributions without Debian's.
CC=musl-gcc cargo build --release --locked --target "$musl"
built=${CARGO_TARGET_DIR:-target}
zdeploy="$built/$musl/release/zdeploy"
# Generated files the package's assets name (Cargo.toml, package.metadata.deb).
out=target/package
rm -rf "$out/man" "$out/completions" "$out"/zdeploy_*.deb "$out"/zdeploy-*-linux-musl.tar.gz
mkdir -p "$out/completions"
"$zdeploy" manpages "$out/man"
"$zdeploy" completions bash > "$out/completions/zdeploy.bash"
"$zdeploy" completions zsh > "$out/completions/_zdeploy"
"$zdeploy" completions fish > "$out/completions/zdeploy.fish"
# cargo deb reads target/release/zdeploy in the assets as the --target build.
cargo deb --no-build --locked --target "$musl" --output "$out/"

version=$("$zdeploy" --version | awk '{print $2}')
tarball="$out/zdeploy-$version-$arch-linux-musl.tar.gz"
tar -czf "$tarball" -C "$built/$musl/release" zdeploy
ls "$out"/zdeploy_*.deb "$tarball"
