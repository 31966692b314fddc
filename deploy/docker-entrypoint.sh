#!/bin/sh
# Entry point of the concord image: `concord-entrypoint node [flags…]` runs `concord node [flags…]`.
#
# Replicas of one service (docker compose --scale, a Kubernetes Deployment) share one environment,
# so each one takes its identity from its container unless the environment sets it:
# - CONCORD_NODE_NAME: the container's hostname (unique per container; a Kubernetes pod's name);
# - CONCORD_ADVERTISE_HOST: the container's IP address, where the other nodes reach its cluster
#   port (a Kubernetes pod sets it from status.podIP).
# The nodes then find each other through the store: no list of peers anywhere.
set -eu
if [ -z "${CONCORD_NODE_NAME:-}" ]; then
  CONCORD_NODE_NAME="$(hostname)"
fi
if [ -z "${CONCORD_ADVERTISE_HOST:-}" ]; then
  CONCORD_ADVERTISE_HOST="$(hostname -i | cut -d ' ' -f 1)"
fi
export CONCORD_NODE_NAME CONCORD_ADVERTISE_HOST
exec concord "$@"
