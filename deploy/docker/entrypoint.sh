#!/bin/sh
# Entrypoint of every WeMcp image. SERVICE (baked in at build time) names the service; its settings
# read WEMCP_<SERVICE>_HOST / WEMCP_<SERVICE>_PORT, so in a container it listens on 0.0.0.0:8000
# unless those are set explicitly. Then it runs the given command (the image's CMD by default).
set -eu

case "${SERVICE:-}" in
  "" ) echo "wemcp-entrypoint: SERVICE is not set (build the image with --build-arg SERVICE=<name>)" >&2; exit 64 ;;
  *[!a-z0-9_]* ) echo "wemcp-entrypoint: invalid SERVICE '${SERVICE}'" >&2; exit 64 ;;
esac

svc=$(printf '%s' "$SERVICE" | tr '[:lower:]' '[:upper:]')
eval ": \"\${WEMCP_${svc}_HOST:=0.0.0.0}\" \"\${WEMCP_${svc}_PORT:=8000}\""
export "WEMCP_${svc}_HOST" "WEMCP_${svc}_PORT"

if [ "$#" -eq 0 ]; then
  set -- python -m "wemcp.${SERVICE}.main"
fi
exec "$@"
