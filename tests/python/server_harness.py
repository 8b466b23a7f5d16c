"""Starts a real griffin-server on loopback for the end-to-end tests, and small helpers
(metrics parsing, gRPC stub generation) the tests share."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "data" / "griffin"
PROTO_DIR = ROOT / "proto"


def server_binary():
    bin_dir = os.environ.get("GRIFFIN_BIN")
    path = Path(bin_dir) / "griffin-server" if bin_dir else None
    if path is None or not path.exists():
        pytest.fail(f"GRIFFIN_BIN={bin_dir!r} does not hold a built griffin-server: build it and set "
                    "GRIFFIN_BIN to its bin/ folder (make test does both)", pytrace=False)
    return str(path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One griffin-server process. stop() sends SIGTERM and returns the exit code.

    `api_key`: sent by the helpers below (and `session`) as Authorization: Bearer. `tls`: a dict
    with `ca` (verifies the server) and optionally `cert` and `key` (the client's, for mutual TLS);
    the helpers then speak HTTPS. `env`: extra environment variables for the process."""

    def __init__(self, *extra, model=FIXTURE, drain_timeout=10, wait_ready=True, api_key=None,
                 tls=None, env=None):
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"griffin-server-{self.http_port}.log"
        self.log = open(self.log_path, "wb")
        args = [server_binary(), "--model", str(model), "--backend", "cpu",
                "--http_port", str(self.http_port), "--grpc_port", str(self.grpc_port),
                "--drain_timeout", str(drain_timeout), *map(str, extra)]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.http_port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"
        if tls:
            # Not from the environment: REQUESTS_CA_BUNDLE would replace this CA.
            self.session.trust_env = False
            self.session.verify = str(tls["ca"])
            if tls.get("cert"):
                self.session.cert = (str(tls["cert"]), str(tls["key"]))
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"griffin-server exited with {self.proc.returncode}: {self.logs()}")
            try:
                if self.session.get(self.url + ("/ready" if wait_ready else "/health"),
                                    timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.05)
        else:
            self.proc.kill()
            raise RuntimeError("griffin-server did not become ready in 60 s")
        if wait_ready:
            self.model = self.session.get(self.url + "/v1/models", timeout=5).json()["data"][0]["id"]

    def logs(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc

    # ---- metrics (OPS-3)
    def metrics(self):
        text = self.session.get(self.url + "/metrics", timeout=5).text
        values = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", line)
            if m:
                values[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return values

    def gauge(self, name):
        for key, value in self.metrics().items():
            if key.split("{")[0] == name:
                return value
        raise KeyError(name)

    def wait_idle(self, timeout=20):
        """Running and waiting back to 0, every slot free (bounded wait: aborts land within a step)."""
        deadline = time.time() + timeout
        while True:
            m = {k: self.gauge(k) for k in ("griffin_num_requests_running", "griffin_num_requests_waiting",
                                            "griffin_state_slots_used")}
            if all(v == 0 for v in m.values()):
                return m
            if time.time() > deadline:
                raise AssertionError(f"server not idle: {m}")
            time.sleep(0.02)

    def assert_healthy(self):
        """R-SHARED-1: still ready, one valid request succeeds, gauges back to idle."""
        assert self.session.get(self.url + "/ready", timeout=5).status_code == 200
        r = self.session.post(self.url + "/v1/completions",
                          json={"model": self.model, "prompt": "Hello", "max_tokens": 4,
                                "temperature": 0, "ignore_eos": True}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 4
        self.wait_idle()


def grpc_modules(tmp_dir):
    """griffin.v1 stubs generated now with grpcio-tools (never committed)."""
    from grpc_tools import protoc
    import grpc_tools
    out = Path(tmp_dir)
    include = Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", str(PROTO_DIR / "griffin" / "v1" / "generation.proto")])
    assert rc == 0, "protoc failed"
    for d in (out / "griffin", out / "griffin" / "v1"):
        (d / "__init__.py").touch()
    sys.path.insert(0, str(out))
    from griffin.v1 import generation_pb2, generation_pb2_grpc
    return generation_pb2, generation_pb2_grpc
