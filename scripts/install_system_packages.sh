#!/usr/bin/env bash
# System packages the test suite needs: a real SLURM (controller, node daemon, accounting) with munge and
# MariaDB. Idempotent; works as root on a fresh Debian 12 machine. Does nothing when all are present.
set -euo pipefail
need=()
for pair in slurmctld:slurm-wlm slurmdbd:slurmdbd mariadbd:mariadb-server munged:munge; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install_system_packages: need root to install ${need[*]}" >&2; exit 1
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# Debian's maintainer scripts try to start services; with no init system they fail harmlessly.
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
