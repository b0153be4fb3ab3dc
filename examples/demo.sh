#!/usr/bin/env bash
# Deploy the bundled Bubble Shooter into a local webroot with zdeploy, twice:
# once from a fresh git repository, then again after a colleague "adds a
# level" while a player's high score sits in the live release. Shows which
# release is live and that the score survived the deploy.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
project=$(dirname "$here")
demo=${ZDEPLOY_DEMO_DIR:-/tmp/zdeploy-demo}

command -v git >/dev/null || { echo "demo: git is required (apt-get install git)" >&2; exit 1; }
"$project/scripts/build-deps.sh"
echo "==> building zdeploy"
cargo build --release --quiet --manifest-path "$project/Cargo.toml"
zdeploy="$project/target/release/zdeploy"

echo "==> preparing $demo"
rm -rf "$demo"
mkdir -p "$demo/webroot"
repo="$demo/bubble-shooter"
cp -r "$here/bubble-shooter" "$repo"
gitq() { git -C "$repo" -c user.name=Demo -c user.email=demo@example.com -c init.defaultBranch=main "$@"; }
gitq init --quiet
gitq add -A
gitq commit --quiet -m "Bubble Shooter 1.0"

echo "==> first deploy"
"$zdeploy" deploy --webroot "$demo/webroot" "$repo"

echo "==> a player saves a high score into the live release"
printf '{"name":"Alice","score":4200,"level":"01-meadow","at":"2026-11-26T10:00:00Z"}' \
  > "$demo/webroot/ROOT/scores/demo-alice.json"

echo "==> a colleague adds a level and the site is deployed again"
cat > "$repo/levels/04-glacier.json" <<'LEVEL'
{"name": "Glacier", "rows": ["BBBBBBBB", "BPPBBPPB", "PBBPPBBP", "BBPPPPBB"]}
LEVEL
echo "1.1" > "$repo/VERSION"
gitq add -A
gitq commit --quiet -m "New level: Glacier"
"$zdeploy" deploy --webroot "$demo/webroot" "$repo"

echo
"$zdeploy" releases --webroot "$demo/webroot"
echo
echo "live: $(readlink "$demo/webroot/ROOT")"
echo "levels now served: $(ls "$demo/webroot/ROOT/levels" | tr '\n' ' ')"
echo "Alice's high score survived the deploy: $(cat "$demo/webroot/ROOT/scores/demo-alice.json")"
if command -v php >/dev/null; then
  echo "play it: php -S 127.0.0.1:8080 -t $demo/webroot/ROOT"
fi
