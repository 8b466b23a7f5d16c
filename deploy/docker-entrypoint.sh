#!/bin/sh
# Container entry point: griffin-server configured through environment variables (flags given
# as container arguments are appended and win). exec, so SIGTERM reaches the server and drains it.
set -eu
exec /opt/griffin/bin/griffin-server \
  --model="${GRIFFIN_MODEL:-/models/demo}" \
  --backend="${GRIFFIN_BACKEND:-auto}" \
  --host="${GRIFFIN_HOST:-0.0.0.0}" \
  --http_port="${GRIFFIN_HTTP_PORT:-8000}" \
  --grpc_port="${GRIFFIN_GRPC_PORT:-50051}" \
  --drain_timeout="${GRIFFIN_DRAIN_TIMEOUT:-30}" \
  --state_memory_mib="${GRIFFIN_STATE_MEMORY_MIB:-4096}" \
  --log_format="${GRIFFIN_LOG_FORMAT:-json}" \
  "$@"
