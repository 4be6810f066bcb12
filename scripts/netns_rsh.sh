#!/bin/sh
# Open MPI's launch agent for scripts/mpi_two_hosts.sh (`--mca plm_rsh_agent`), in place of ssh: called as
# `netns_rsh.sh [OPTIONS] HOST COMMAND…`, it runs COMMAND with `sh -c` in the network namespace that owns HOST.
# SWIFTAI_NETNS_HOSTS maps addresses to namespaces: "10.77.0.1=ns-a 10.77.0.2=ns-b".
# Like ssh, the command starts with a clean environment (mpirun's -x forwards what the ranks need); the filesystem
# is the host's own (a network namespace changes no mounts).
set -eu
while [ $# -gt 0 ]; do
  case $1 in
  -*) shift ;; # ssh-style options (-x, -T): nothing to do here
  *) break ;;
  esac
done
if [ $# -lt 2 ]; then
  echo "netns_rsh.sh: usage: netns_rsh.sh [OPTIONS] HOST COMMAND..." >&2
  exit 255
fi
host=$1
shift
ns=
for pair in ${SWIFTAI_NETNS_HOSTS:-}; do
  if [ "${pair%%=*}" = "$host" ]; then ns=${pair#*=}; fi
done
if [ -z "$ns" ]; then
  echo "netns_rsh.sh: no network namespace for host '$host' in SWIFTAI_NETNS_HOSTS='${SWIFTAI_NETNS_HOSTS:-}'" >&2
  exit 255
fi
# ssh joins its arguments with spaces into one command for the remote shell: so does "$*".
exec ip netns exec "$ns" env -i PATH="$PATH" HOME="${HOME:-/}" USER="$(id -un)" LOGNAME="$(id -un)" SHELL=/bin/sh \
  sh -c "$*"
