"""Two griffin-server replicas behind a real nginx running deploy/nginx/nginx.conf, scraped by a
real Prometheus: one replica is drained (SIGTERM) in the middle of a griffin-bench run over HTTP and
over gRPC and no request fails; with both replicas gone, clients get a clean error, not a hang."""

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from server_harness import FIXTURE, Server, free_port, grpc_modules

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"


@pytest.fixture(autouse=True)
def _tools():
    for tool in ("nginx", "prometheus", "promtool"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (deploy/install-deps.sh installs it)", pytrace=False)


def bench_binary():
    path = Path(os.environ.get("GRIFFIN_BIN", "")) / "griffin-bench"
    if not os.environ.get("GRIFFIN_BIN") or not path.exists():
        pytest.fail("GRIFFIN_BIN does not hold a built griffin-bench (make test sets it)", pytrace=False)
    return str(path)


def wait_for_port(port, proc, what, timeout=20):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


class Nginx:
    """nginx with the shipped configuration; only addresses, ports and paths are rewritten."""

    def __init__(self, tmp, replicas):
        self.http_port, self.grpc_port = free_port(), free_port()
        conf = NGINX_CONF.read_text()
        for i, replica in enumerate(replicas, start=1):
            conf = conf.replace(f"griffin-{i}:8000", f"127.0.0.1:{replica.http_port}")
            conf = conf.replace(f"griffin-{i}:50051", f"127.0.0.1:{replica.grpc_port}")
        assert not re.search(r"server griffin-\d", conf), "the shipped config names more replicas than the test runs"
        conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{self.http_port};")
        conf = conf.replace("listen 8081 http2;", f"listen 127.0.0.1:{self.grpc_port} http2;")
        conf = conf.replace("/tmp/", f"{tmp}/")
        conf = conf.replace("access_log /dev/stdout;",
                            "log_format diag '$time_iso8601 $request_uri $status up=$upstream_addr "
                            "upstatus=$upstream_status grpc=$upstream_trailer_grpc_status "
                            "sent=$sent_http_grpc_status';\n"
                            f"  access_log {tmp}/access.log diag;")
        (tmp / "nginx.conf").write_text(conf)
        self.log = open(tmp / "nginx.log", "wb")
        self.proc = subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-g", "daemon off;"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.http_port, self.proc, "nginx")
        wait_for_port(self.grpc_port, self.proc, "nginx")

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Prometheus:
    def __init__(self, tmp, replicas):
        self.port = free_port()
        targets = ", ".join(f'"127.0.0.1:{r.http_port}"' for r in replicas)
        shipped = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
        config = re.sub(r"targets: \[.*\]", f"targets: [{targets}]", shipped)
        config = re.sub(r"scrape_interval: \S+", "scrape_interval: 1s", config)
        (tmp / "prometheus.yml").write_text(config)
        self.log = open(tmp / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc, "prometheus", timeout=60)

    def targets_up(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                data = requests.get(f"http://127.0.0.1:{self.port}/api/v1/targets", timeout=2).json()
                active = data["data"]["activeTargets"]
                if active and all(t["health"] == "up" for t in active):
                    return active
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.2)
        raise AssertionError("Prometheus did not scrape every replica successfully")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def wait_until(predicate, what, timeout=60):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def not_ready(replica):
    try:
        return requests.get(replica.url + "/ready", timeout=5).status_code != 200
    except requests.RequestException:
        return True  # already gone


def lint_findings(lint):
    return [line for line in (lint.stdout + lint.stderr).splitlines() if line.strip()]


def run_bench(args, results, key):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    results[key] = proc


def test_failover_through_nginx(tmp_path):
    replicas = [Server("--slots", 8, "--max_queue", 256, model=FIXTURE, drain_timeout=60) for _ in range(2)]
    nginx = prometheus = None
    try:
        nginx = Nginx(tmp_path, replicas)
        prometheus = Prometheus(tmp_path, replicas)

        # Prometheus scrapes both replicas, and each /metrics passes promtool's lint.
        assert len(prometheus.targets_up()) == 2
        for replica in replicas:
            text = requests.get(replica.url + "/metrics", timeout=5).text
            lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
            assert lint.returncode == 0 and not lint_findings(lint), lint.stdout + lint.stderr
        # /metrics is not on the public listener.
        assert requests.get(f"http://127.0.0.1:{nginx.http_port}/metrics", timeout=5).status_code == 404

        def bench(protocol, name, *load):
            port = nginx.http_port if protocol == "http" else nginx.grpc_port
            return threading.Thread(target=run_bench, args=(
                [bench_binary(), "--protocol", protocol, "--port", str(port), "--input_len", "16",
                 "--ignore_eos", "--warmup_requests", "1", "--progress=false", "--request_timeout", "120",
                 "--result_json", str(tmp_path / f"{name}.json"), *load], results, name))

        # HTTP: a steady stream of requests before, during and after the drain; a draining replica
        # answers 503 and then refuses connections, and nginx retries both elsewhere.
        # gRPC: a batch of long streams is in flight on both replicas when the drain starts and must
        # finish; a second batch starts while replica 1 drains, whose refused connections nginx
        # retries elsewhere. The gRPC load leaves the instant of the shutdown itself alone: a call
        # that reaches a replica then, before nginx has read the GOAWAY, is cancelled by gRPC and
        # no balancer can retry it (about one run in twenty under steady gRPC load); production
        # avoids that instant by taking the replica out of the balancer first (deploy/README.md).
        expected = {"http": 120, "grpc_inflight": 24, "grpc_new": 24}
        results = {}
        http = bench("http", "http", "--num_requests", "120", "--request_rate", "40", "--output_len", "48")
        inflight = bench("grpc", "grpc_inflight", "--num_requests", "24", "--request_rate", "inf",
                         "--output_len", "400")
        http.start()
        inflight.start()
        # Drain replica 1 once it holds several of the long gRPC streams (observed, not slept for),
        # and start the second batch once it has stopped being ready (draining).
        wait_until(lambda: replicas[0].gauge("griffin_num_requests_running") >= 4,
                   "replica 1 to run the in-flight streams")
        replicas[0].proc.send_signal(signal.SIGTERM)
        wait_until(lambda: not_ready(replicas[0]), "replica 1 to start draining")
        draining_when_new_batch_started = replicas[0].proc.poll() is None
        new = bench("grpc", "grpc_new", "--num_requests", "24", "--request_rate", "12", "--output_len", "48")
        new.start()
        drained_rc = replicas[0].stop(timeout=120)
        for t in (http, inflight, new):
            t.join(timeout=320)
        assert drained_rc == 0, replicas[0].logs()
        assert draining_when_new_batch_started, "replica 1 had already exited: raise the in-flight load"

        served_by_drained = 0
        for protocol in expected:
            proc = results[protocol]
            assert proc.returncode in (0, 3), f"{protocol}: {proc.stdout}\n{proc.stderr}"
            level = json.loads((tmp_path / f"{protocol}.json").read_text())["levels"][0]
            unusual = [line for r in replicas for line in r.logs().splitlines()
                       if " request " in line and "status=OK" not in line]
            nginx_log = (tmp_path / "nginx.log").read_text(errors="replace").splitlines()
            if level["failed"]:
                keep = tmp_path.parent.parent / f"failover-failure-{int(time.time())}"
                shutil.copytree(tmp_path, keep, ignore=shutil.ignore_patterns("tsdb", "stubs"))
            assert level["failed"] == 0, (protocol, level["failures_by_status"], unusual[:10], nginx_log[-10:])
            assert level["completed"] == expected[protocol]
        for line in replicas[0].logs().splitlines():
            if " info request " in line and "status=OK" in line:
                served_by_drained += 1
        assert served_by_drained > 0, "the drained replica served nothing: the test proved nothing"
        grpc_on_drained = [line for line in replicas[0].logs().splitlines()
                           if "api=grpc" in line and "status=OK" in line and "completion_tokens=400" in line]
        assert grpc_on_drained, "no long gRPC stream finished on the drained replica"
        replicas[1].wait_idle()

        # Both replicas gone: a clean 502/503 and UNAVAILABLE, not a hang (each call has a timeout).
        assert replicas[1].stop() == 0
        r = requests.post(f"http://127.0.0.1:{nginx.http_port}/v1/completions",
                          json={"prompt": "x", "max_tokens": 2}, timeout=20)
        assert r.status_code in (502, 503)
        import grpc
        (tmp_path / "stubs").mkdir()
        pb, pb_grpc = grpc_modules(tmp_path / "stubs")
        with grpc.insecure_channel(f"127.0.0.1:{nginx.grpc_port}") as channel:
            stub = pb_grpc.GenerationStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Generate(pb.GenerateRequest(text=b"x"), timeout=20))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
    finally:
        for replica in replicas:
            replica.stop()
        if nginx:
            nginx.stop()
        if prometheus:
            prometheus.stop()
