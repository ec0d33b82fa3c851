"""The whole-model CPU comparison (``bench.models_cpu``): its table, and a smoke run end to end.

The smoke run uses whichever contenders are installed: ONNX Runtime and OpenVINO
(``pip install .[baselines]``) are skipped with a recorded reason where they are missing,
and the run must still produce a well-formed table.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import models_cpu  # noqa: E402
from bench.model_worker import CONTENDERS, availability  # noqa: E402
from bench.report import models_cpu_markdown  # noqa: E402

pytest.importorskip("torchvision")

CELL = re.compile(r"^(\d[\d,]*\.\d+) \((\d+\.\d+)\)$")  # "12.34 (1.05)": ms and × best


def _table_rows(lines: list[str], first_header: str) -> tuple[list[str], list[list[str]]]:
    """Header cells and body rows of the first markdown table whose header starts with ``first_header``."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split(" | ")]
    body = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        body.append([c.strip() for c in line.strip("|").split(" | ")])
    return header, body


def _synthetic_doc() -> dict[str, Any]:
    def contender(ms: float, err: float) -> dict[str, Any]:
        return {
            "median_s": ms / 1e3,
            "q1_s": ms / 1e3,
            "q3_s": ms / 1e3,
            "max_abs_err": err,
            "ref_max": 1.0,
            "build_s": 1.0,
            "info": {},
        }

    row = {
        "model": "shufflenet_v2_x1_0",
        "width": "x1.0",
        "batch": 1,
        "threads": 2,
        "contenders": {"eager": contender(10.0, 0.0), "onnxruntime": contender(5.0, 1e-6)},
        "skipped": {"compile": "RuntimeError: boom"},
    }
    for c in row["contenders"].values():
        c["vs_best"] = c["median_s"] / 5e-3
    row["best"] = "onnxruntime"
    return {
        "settings": {"contenders": ["eager", "compile", "onnxruntime", "openvino"], "rounds": 1, "calls": 1},
        "environment": {"versions": {}},
        "notes": ["openvino skipped: openvino is not installed (pip install .[baselines])"],
        "skipped": {"openvino": "openvino is not installed (pip install .[baselines])"},
        "rows": [row],
    }


def test_markdown_of_a_synthetic_run() -> None:
    lines = "\n".join(models_cpu_markdown(_synthetic_doc())).splitlines()
    header, body = _table_rows(lines, "model")
    assert header == ["model", "N", "threads", "eager ms (× best)", "onnxruntime ms (× best)", "best"]
    assert body == [["x1.0", "1", "2", "10.00 (2.00)", "5.00 (1.00)", "onnxruntime"]]
    header, body = _table_rows(lines, "model | N | threads | contender")
    assert header[3:5] == ["contender", "ms"]
    assert [r[3] for r in body] == ["eager", "onnxruntime", "compile"]
    assert body[2][-1] == "failed: RuntimeError: boom"
    text = "\n".join(lines)
    assert "> note: openvino skipped" in text and "Not run: `openvino`" in text


def test_in_the_suite_report(tmp_path: Path) -> None:
    from bench import report

    doc = {
        "machine_info": {"device": "cpu", "cpu_name": "test cpu"},
        "commit_info": {"id": "abc"},
        "benchmarks": [],
        "datetime": "2025-01-01T00:00:00",
        "shufflenet_bench": {"settings": {}, "skipped": [], "models_cpu": _synthetic_doc()},
    }
    report.write_report(doc, tmp_path, plots=False)
    text = (tmp_path / "report.md").read_text()
    assert "## Whole models on the CPU: baselines" in text and "| x1.0 | 1 | 2 | 10.00 (2.00) |" in text


def test_bench_models_flag() -> None:
    import torch

    from bench.__main__ import _settings, parse_args

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    s = _settings(parse_args(["--models"]), cpu)
    assert s["families"] == ["models"] and s["models_cpu"] and not s["models_cpu_quick"]
    assert _settings(parse_args(["--models", "--quick"]), cpu)["models_cpu_quick"]
    assert not _settings(parse_args(["--models"]), cuda)["models_cpu"]  # CPU only
    assert not _settings(parse_args([]), cpu)["models_cpu"]  # the default quick run leaves it out
    assert _settings(parse_args(["--full"]), cpu)["models_cpu"]


def test_smoke_run(tmp_path: Path) -> None:
    # The cheap contenders (the torch.compile ones take minutes on 2 cores), one model, one thread.
    wanted = ["eager", "accelerate", "accelerate_fused", "onnxruntime", "openvino"]
    argv = ["--quick", "--models", "x0.5", "--threads", "1", "--rounds", "2", "--calls", "1"]
    argv += ["--contenders", *wanted, "--out", str(tmp_path)]
    assert models_cpu.main(argv) == 0
    doc = json.loads((tmp_path / "models_cpu.json").read_text())
    assert doc["settings"]["models"] == ["x0.5"] and doc["settings"]["batches"] == [1]
    (row,) = doc["rows"]
    for name in wanted:
        ok, reason = availability(name)
        if ok:
            c = row["contenders"][name]  # it ran: timed and checked against torchvision eager
            assert len(c["data"]) == 2 and c["median_s"] > 0
            assert c["process"]["torch_threads"] == 1
            assert c["process"]["cpus"] is None or len(c["process"]["cpus"]) == 1  # pinned to one CPU
            assert c["max_abs_err"] <= 1e-3 * max(1.0, c["ref_max"]), name
        else:
            assert doc["skipped"][name] == reason and name not in row["contenders"]
    assert row["contenders"]["eager"]["max_abs_err"] == 0.0
    if "openvino" in row["contenders"]:
        assert row["contenders"]["openvino"]["info"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert min(c["vs_best"] for c in row["contenders"].values()) == pytest.approx(1.0)

    lines = (tmp_path / "models_cpu.md").read_text().splitlines()
    header, body = _table_rows(lines, "model")
    ran = [n for n in CONTENDERS if n in row["contenders"]]
    assert header == ["model", "N", "threads", *[f"{n} ms (× best)" for n in ran], "best"]
    assert len(body) == 1 and body[0][:3] == ["x0.5", "1", "1"] and body[0][-1] == row["best"]
    ratios = []
    for cell in body[0][3:-1]:
        m = CELL.match(cell)
        assert m, cell
        ratios.append(float(m.group(2)))
    assert min(ratios) == 1.0
    for name in doc["skipped"]:
        assert f"`{name}`" in "\n".join(lines)
