#!/bin/sh
# Deploy through zdeploy's agent and wait for the verdict: exit 0 once it
# is live (or was live already), 1 if the deploy failed or was skipped or
# refused, 2 on bad use.
#
#   ZDEPLOY_URL=https://deploy.example.com ZDEPLOY_TOKEN=… \
#     zdeploy-deploy.sh APP site.tar.gz        # the archive CI built
#     zdeploy-deploy.sh APP --commit SHA       # the commit CI tested
#
# Needs only sh, curl and sha256sum. ZDEPLOY_FORCE=1 deploys even while the
# app is frozen; ZDEPLOY_WAIT is how long to wait for the verdict (seconds,
# default 900).
set -eu

usage='usage: zdeploy-deploy.sh APP ARCHIVE | zdeploy-deploy.sh APP --commit SHA'
app=${1:?$usage}
archive=${2:?$usage}
commit=
if [ "$archive" = --commit ]; then
    commit=${3:?$usage}
    archive=
fi
url=${ZDEPLOY_URL:?set ZDEPLOY_URL to the agent, e.g. https://deploy.example.com}
token=${ZDEPLOY_TOKEN:?set ZDEPLOY_TOKEN to the agent token (a CI secret)}
wait_limit=${ZDEPLOY_WAIT:-900}
force=false
[ "${ZDEPLOY_FORCE:-0}" = 1 ] && force=true

# The token goes in a header read from stdin, so it never shows in `ps`.
if [ -n "$commit" ]; then
    case $commit in
        *[!0-9a-fA-F]* | '') echo "zdeploy-deploy: '$commit' is not a commit id" >&2; exit 2 ;;
    esac
    echo "zdeploy-deploy: asking $app to deploy commit $commit"
    answer=$(printf 'Authorization: Bearer %s\n' "$token" | curl --silent --show-error \
        --header @- \
        --header "Content-Type: application/json" \
        --data "{\"commit\": \"$commit\", \"force\": $force}" \
        --write-out '\n%{http_code}' \
        "$url/api/apps/$app/deploy")
else
    [ -f "$archive" ] || { echo "zdeploy-deploy: no archive $archive" >&2; exit 2; }
    sha256=$(sha256sum "$archive" | cut -d' ' -f1)
    echo "zdeploy-deploy: sending $archive (sha256 $sha256) to deploy $app"
    answer=$(printf 'Authorization: Bearer %s\n' "$token" | curl --silent --show-error \
        --header @- \
        --header "X-Zdeploy-Archive-Sha256: $sha256" \
        --header "Content-Type: application/octet-stream" \
        --data-binary "@$archive" \
        --write-out '\n%{http_code}' \
        "$url/api/apps/$app/deploy?force=$force")
fi
status=$(printf '%s' "$answer" | tail -n 1)
body=$(printf '%s' "$answer" | sed '$d')
if [ "$status" != 202 ]; then
    echo "zdeploy-deploy: the agent refused the deploy ($status): $body" >&2
    exit 1
fi

field() { printf '%s' "$1" | grep -o "\"$2\":\"[^\"]*\"" | head -n 1 | cut -d'"' -f4; }
status_url=$(field "$body" status_url)
echo "zdeploy-deploy: queued; following $status_url"

waited=0
while :; do
    state=$(curl --silent --show-error --fail "$url$status_url")
    case $(field "$state" state) in
        done) break ;;
        queued | running) ;;
        *) echo "zdeploy-deploy: unexpected answer: $state" >&2; exit 1 ;;
    esac
    if [ "$waited" -ge "$wait_limit" ]; then
        echo "zdeploy-deploy: no verdict after $wait_limit s; see the agent's dashboard" >&2
        exit 1
    fi
    sleep 2
    waited=$((waited + 2))
done

outcome=$(field "$state" outcome)
release=$(field "$state" release)
case $outcome in
    success) echo "zdeploy-deploy: $app now serves $release$(c=$(field "$state" commit); [ -n "$c" ] && echo " (commit $c)")" ;;
    unchanged) echo "zdeploy-deploy: $app already served these bytes" ;;
    *)
        echo "zdeploy-deploy: the deploy ended $outcome: $(field "$state" error)" >&2
        exit 1
        ;;
esac
