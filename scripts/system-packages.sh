#!/usr/bin/env bash
# Install the system programs the tests drive for real: OpenSSH's server (test hosts),
# Debian's python3 venv module (`fab deploy --venv` on a test host), Chromium (browser
# tests), Slurm with MUNGE (a one-node Slurm cluster, tests/slurmcluster.py), iptables
# (a firewalled worker in the network preflight's tests) and faketime (a host whose clock is
# off). Needs root or sudo; does nothing when all are present.
set -euo pipefail

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v setfacl >/dev/null 2>&1 || need+=(acl)
/usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
[ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] || need+=(slurm-wlm)
[ -x /usr/sbin/munged ] || need+=(munge)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v faketime >/dev/null 2>&1 || need+=(faketime)
[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "system-packages: need root to install: ${need[*]}" >&2; exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-packages: no apt-get; install these yourself: ${need[*]}" >&2; exit 1
fi
echo "system-packages: installing ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
