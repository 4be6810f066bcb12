#!/usr/bin/env bash
# Runs a command as a two-host MPI job on this one machine: two network namespaces joined by a veth pair
# (10.77.0.1/24 and 10.77.0.2/24), one rank on each, TCP between them, mpirun in the first and the second's daemon
# started by scripts/netns_rsh.sh instead of ssh. The namespaces are deleted at exit, whatever happens.
#   scripts/mpi_two_hosts.sh COMMAND [ARGS…]      (as root: namespaces need CAP_SYS_ADMIN)
#   MPI_TWO_HOSTS_TIMEOUT=300 (seconds)  MPI_TWO_HOSTS_ARGS="extra mpirun options"
# Exits with the command's status (124 when it ran past the timeout).
set -euo pipefail
if [ $# -eq 0 ]; then
  echo "usage: scripts/mpi_two_hosts.sh COMMAND [ARGS...]" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "mpi_two_hosts.sh: network namespaces need root" >&2
  exit 2
fi
scripts=$(cd "$(dirname "$0")" && pwd)
# Names unique to this run, so parallel runs don't collide.
ns_a="swiftai-$$-a" ns_b="swiftai-$$-b"
host_a=10.77.0.1 host_b=10.77.0.2 subnet=10.77.0.0/24
job=

cleanup() {
  trap - EXIT INT TERM
  if [ -n "$job" ]; then kill -TERM "$job" 2>/dev/null || true; fi
  local ns pids
  for ns in "$ns_a" "$ns_b"; do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [ -n "$pids" ]; then
      kill -TERM $pids 2>/dev/null || true
      sleep 1
      kill -KILL $(ip netns pids "$ns" 2>/dev/null || true) 2>/dev/null || true
    fi
    ip netns delete "$ns" 2>/dev/null || true # takes its end of the veth pair along
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for ns in "$ns_a" "$ns_b"; do
  # A namespace left by an earlier run whose PID this one reuses (killed before its cleanup ran).
  ip netns delete "$ns" 2>/dev/null || true
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
# Both ends are created inside their namespaces: no interface ever appears in the host's own namespace.
ip link add veth0 netns "$ns_a" type veth peer name veth0 netns "$ns_b"
ip -n "$ns_a" addr add "$host_a/24" dev veth0
ip -n "$ns_b" addr add "$host_b/24" dev veth0
ip -n "$ns_a" link set veth0 up
ip -n "$ns_b" link set veth0 up

export SWIFTAI_NETNS_HOSTS="$host_a=$ns_a $host_b=$ns_b"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# The daemon on the second host starts with a clean environment (as over ssh): forward what the ranks read.
forward=()
for v in SWIFTAI_NUM_THREADS OMP_NUM_THREADS DNNL_MAX_CPU_ISA SWIFTAI_LOW_PRECISION; do
  if [ -n "${!v+x}" ]; then forward+=(-x "$v"); fi
done
# shellcheck disable=SC2086 # MPI_TWO_HOSTS_ARGS is a list of options
timeout --kill-after=10 "${MPI_TWO_HOSTS_TIMEOUT:-300}" \
  ip netns exec "$ns_a" mpirun -H "$host_a:1,$host_b:1" -np 2 --bind-to none -wdir "$PWD" \
  --mca plm_rsh_agent "$scripts/netns_rsh.sh" \
  --mca btl tcp,self --mca btl_tcp_if_include "$subnet" --mca oob_tcp_if_include "$subnet" \
  "${forward[@]}" ${MPI_TWO_HOSTS_ARGS:-} "$@" &
job=$!
status=0
wait "$job" || status=$?
job=
exit "$status"
