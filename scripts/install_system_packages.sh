#!/usr/bin/env bash
# System packages, by group, for what needs them (never for `make setup` / `make repro`, which need only Python):
#   slurm    a real local SLURM cluster with accounting (slurm-wlm, slurmdbd, mariadb-server, munge):
#            the test suite and `pdmd cluster start`
#   browser  headless Chromium for the MLflow UI test (chromium)
# Usage: scripts/install_system_packages.sh [slurm] [browser]   (no argument: both). Idempotent: does nothing
# (and needs no root) when everything is present; otherwise installs with apt-get as root (Debian 12).
set -euo pipefail
groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=(slurm browser)
# Daemons live in /usr/sbin, which is not on a normal user's PATH: ask dpkg first, then look in the sbin dirs too.
installed() {
  dpkg-query -W -f='${Status}' "$2" 2>/dev/null | grep -q "install ok installed" && return 0
  PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1
}
need=()
for group in "${groups[@]}"; do
  case "$group" in
    slurm) pairs="slurmctld:slurm-wlm slurmdbd:slurmdbd mariadbd:mariadb-server munged:munge" ;;
    browser) pairs="chromium:chromium" ;;
    *) echo "install_system_packages: unknown group '$group' (slurm, browser)" >&2; exit 2 ;;
  esac
  for pair in $pairs; do
    installed "${pair%%:*}" "${pair##*:}" || need+=("${pair##*:}")
  done
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install_system_packages: need root to install ${need[*]} (for: ${groups[*]}); run as root:" >&2
  echo "  sudo bash scripts/install_system_packages.sh ${groups[*]}" >&2
  echo "(the pipeline itself, \`make repro\`, needs none of them)" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# Debian's maintainer scripts try to start services; with no init system they fail harmlessly.
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
