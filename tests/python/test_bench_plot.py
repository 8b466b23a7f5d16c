"""bench/plot.py turns griffin-bench result files into PNG and SVG curves, and refuses other JSON."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def level(throughput, ttft, tpot):
    dist = lambda m: {"mean": m, "median": m, "p90": m * 1.5, "p99": m * 2, "min": m / 2, "max": m * 3, "count": 10}
    return {"output_throughput": throughput, "ttft_ms": dist(ttft), "tpot_ms": dist(tpot),
            "request_rate": 1.0, "completed": 10, "failed": 0}


def test_plot_writes_png_and_svg(tmp_path):
    for name, scale in (("grpc", 1.0), ("http", 1.1)):
        levels = [level(100 * scale * k, 20 * k, 5 * k) for k in (1, 2, 3)]
        (tmp_path / f"{name}.json").write_text(json.dumps({"levels": levels}))
    out = tmp_path / "curves"
    subprocess.run([sys.executable, str(ROOT / "bench" / "plot.py"), str(tmp_path / "grpc.json"),
                    str(tmp_path / "http.json"), "--out", str(out)], check=True, capture_output=True)
    png, svg = out.with_suffix(".png"), out.with_suffix(".svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in svg.read_bytes()[:2000]


def test_plot_rejects_other_json(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"something": 1}))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "plot.py"), str(tmp_path / "x.json"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "no 'levels'" in proc.stderr
