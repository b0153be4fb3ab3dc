#!/usr/bin/env bash
# Run zdeploy's whole test suite, installing what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests drive real git, drop privileges with setpriv (util-linux),
# serve deploys under load with real nginx, Apache and PHP-FPM, deploy
# fleets over real ssh, and click through the agent's dashboard in a real
# browser.
needed=()
command -v git >/dev/null || needed+=(git)
command -v setpriv >/dev/null || needed+=(util-linux)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || needed+=(nginx)
command -v php-fpm8.2 >/dev/null || [ -x /usr/sbin/php-fpm8.2 ] || needed+=(php8.2-fpm)
# Apps served from public/ are also tested behind Caddy.
command -v caddy >/dev/null || needed+=(caddy)
command -v apache2 >/dev/null || [ -x /usr/sbin/apache2 ] || needed+=(apache2)
# WordPress (Debian's package) is deployed as a large real app, on MariaDB.
[ -f /usr/share/wordpress/wp-settings.php ] || needed+=(wordpress)
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || needed+=(mariadb-server)
# MediaWiki (Debian's package) is deployed with its preset and installed by
# its own installer on SQLite.
[ -f /usr/share/mediawiki/maintenance/install.php ] || needed+=(mediawiki)
php -m 2>/dev/null | grep -qx pdo_sqlite || needed+=(php8.2-sqlite3)
# The agent's dashboard is tested in headless Chromium through ChromeDriver.
command -v chromium >/dev/null || needed+=(chromium)
command -v chromedriver >/dev/null || needed+=(chromium-driver)
# Fleets are tested on hosts made of network namespaces (iproute2), each
# running its own sshd, reached with OpenSSH's client.
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || needed+=(iproute2)
command -v ssh >/dev/null || needed+=(openssh-client)
[ -x /usr/sbin/sshd ] || needed+=(openssh-server)
# Uploads on shared storage: sshfs from a storage host, on every web host.
command -v sshfs >/dev/null || needed+=(sshfs)
# Fleets whose agents agree through etcd: a real etcd cluster (etcdctl to
# read it), with HAProxy in front checking each host's /ready.
command -v etcd >/dev/null || needed+=(etcd-server)
command -v etcdctl >/dev/null || needed+=(etcd-client)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || needed+=(haproxy)
# The .deb is installed into a fresh Debian made by debootstrap, and its
# unit checked with systemd-analyze (scripts/package.sh installs what the
# build itself needs).
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || needed+=(debootstrap)
command -v systemd-analyze >/dev/null || needed+=(systemd)
# Reflinks are tested on an XFS image the tests loop-mount.
command -v mkfs.xfs >/dev/null || [ -x /usr/sbin/mkfs.xfs ] || needed+=(xfsprogs)
if [ ${#needed[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: please install: ${needed[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${needed[@]}"
fi
./scripts/build-deps.sh
# nginx and php-fpm live in /usr/sbin, which a plain user's PATH may lack.
export PATH="$PATH:/usr/sbin"

cargo test --workspace
