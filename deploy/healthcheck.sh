#!/bin/bash
# The images' HEALTHCHECK: exit 0 when griffin-server's /ready answers 200 (loaded, warmed up, not
# draining). Plain bash (/dev/tcp), so the runtime image needs no HTTP client.
exec 3<>"/dev/tcp/127.0.0.1/${GRIFFIN_HTTP_PORT:-8000}" 2>/dev/null || exit 1
printf 'GET /ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
IFS= read -r -t 2 status <&3 || exit 1
[[ $status == "HTTP/1."?" 200 "* ]]
