#!/bin/sh
# Container entry point: griffin-server configured through environment variables (flags given
# as container arguments are appended and win). exec, so SIGTERM reaches the server and drains it.
# Optional security files (mounted secrets): GRIFFIN_API_KEY_FILE, GRIFFIN_TLS_CERT_FILE,
# GRIFFIN_TLS_KEY_FILE, GRIFFIN_TLS_CLIENT_CA_FILE. A single key can also come as GRIFFIN_API_KEY,
# which griffin-server reads from its environment itself (never on a command line).
set -eu
if [ -n "${GRIFFIN_TLS_CLIENT_CA_FILE:-}" ]; then
  set -- --tls_client_ca_file="${GRIFFIN_TLS_CLIENT_CA_FILE}" "$@"
fi
if [ -n "${GRIFFIN_TLS_CERT_FILE:-}" ]; then
  set -- --tls_cert_file="${GRIFFIN_TLS_CERT_FILE}" --tls_key_file="${GRIFFIN_TLS_KEY_FILE:-}" "$@"
fi
if [ -n "${GRIFFIN_API_KEY_FILE:-}" ]; then
  set -- --api_key_file="${GRIFFIN_API_KEY_FILE}" "$@"
fi
: "${GRIFFIN_API_KEY:=}"  # read by griffin-server from the environment when set
exec /opt/griffin/bin/griffin-server \
  --model="${GRIFFIN_MODEL:-/models/demo}" \
  --backend="${GRIFFIN_BACKEND:-auto}" \
  --host="${GRIFFIN_HOST:-0.0.0.0}" \
  --http_port="${GRIFFIN_HTTP_PORT:-8000}" \
  --grpc_port="${GRIFFIN_GRPC_PORT:-50051}" \
  --drain_timeout="${GRIFFIN_DRAIN_TIMEOUT:-30}" \
  --state_memory_mib="${GRIFFIN_STATE_MEMORY_MIB:-0}" \
  --gpu_memory_utilization="${GRIFFIN_GPU_MEMORY_UTILIZATION:-0.9}" \
  --log_format="${GRIFFIN_LOG_FORMAT:-json}" \
  "$@"
