"""The benchmark suite itself: statistics, derived figures, report generation, a tiny CPU run.

The MAC formulas are tested in ``test_mac.py``; here the suite must turn timings into
the right figures, write pytest-benchmark-compatible JSON, and run end to end.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import shufflenet_kernels as sk  # noqa: E402
from bench import report  # noqa: E402
from bench.__main__ import main  # noqa: E402
from bench.core import add_derived, count_cost, outputs_match  # noqa: E402
from bench.timing import make_stats  # noqa: E402
from shufflenet_kernels import mac  # noqa: E402


def _record(
    group: str, provider: str, role: str, median: float, mac_bytes: int, **extra: Any
) -> dict[str, Any]:
    data = [median * 0.9, median, median * 1.1]
    info = {
        "family": "channel_shuffle",
        "direction": "fwd",
        "label": "s",
        "provider": provider,
        "role": role,
        "mac_bytes": mac_bytes,
        "flops": 0,
        "batch": 2,
        "dtype": "float32",
        "layout": "nchw",
        **extra,
    }
    return {
        "group": group,
        "name": f"{group}-{provider}",
        "fullname": f"x::{group}-{provider}",
        "params": {"provider": provider},
        "param": provider,
        "extra_info": info,
        "options": {},
        "stats": make_stats(data),
    }


def test_make_stats_matches_pytest_benchmark() -> None:
    stats_mod = pytest.importorskip("pytest_benchmark.stats")
    for data in (
        [3.0],
        [1.0, 2.0],
        [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 0.5],
        [float(i % 7) for i in range(1, 40)],
    ):
        ours = make_stats(data)
        theirs = stats_mod.Stats()
        for d in data:
            theirs.update(d)
        for key in theirs.fields:
            assert ours[key] == pytest.approx(getattr(theirs, key)), key


def test_add_derived() -> None:
    # 1 MB moved: eager 2 ms, compiled 4 ms, kernel 1 ms, copy 0.5 ms.
    recs = [
        _record("g", "eager", "eager", 2e-3, 10**6),
        _record("g", "compile", "compile", 4e-3, 10**6),
        _record("g", "kernel_cpu", "kernel", 1e-3, 10**6),
        _record("g", "copy", "copy", 5e-4, 10**6),
    ]
    add_derived(recs)
    k = recs[2]["extra_info"]
    assert k["gbps"] == pytest.approx(1.0)
    assert k["copy_gbps"] == pytest.approx(2.0)
    assert k["pct_of_copy"] == pytest.approx(50.0)
    assert k["speedup_vs_eager"] == pytest.approx(2.0)
    assert k["speedup_vs_compile"] == pytest.approx(4.0)
    assert recs[0]["extra_info"]["speedup_vs_eager"] == pytest.approx(1.0)


def test_outputs_match() -> None:
    a = torch.randn(4, 5)
    assert outputs_match((a, torch.empty(0)), (a.clone(), torch.empty(0)))
    assert not outputs_match(a, a + 1e-2)
    assert not outputs_match(a, a[:2])
    assert not outputs_match(a.half(), (a + 0.1).half())
    assert not outputs_match(torch.full((2,), float("nan")), torch.zeros(2))


def test_count_cost_of_a_conv() -> None:
    # One 1x1 conv without bias: the traffic counter and FLOP counter agree with mac.py.
    x = torch.randn(2, 6, 4, 5)
    w = torch.randn(9, 2, 1, 1)
    mac_bytes, flops = count_cost(lambda: F.conv2d(x, w, groups=3))
    want = mac.pointwise_conv_cost(x.shape, 9, 3, 4)
    assert (mac_bytes, flops) == (want.mac_bytes, want.flops)


def test_report_from_small_json(tmp_path: Path) -> None:
    recs = [
        _record("cs[a]", "eager", "eager", 2e-3, 10**6),
        _record("cs[a]", "kernel_cpu", "kernel", 1e-3, 10**6, matches_reference=True),
        _record("cs[a]", "copy", "copy", 5e-4, 10**6),
    ]
    add_derived(recs)
    guide = _record(
        "guideline_G1[1:1-x1]",
        "eager",
        "eager",
        1e-2,
        10**6,
        family="guideline_G1",
        paper=76.2,
        paper_unit="images/s",
        structure="1x1 32->32->32",
    )
    guide["params"]["width"] = 1
    doc = {
        "machine_info": {
            "device": "cpu",
            "cpu_name": "test cpu",
            "torch_version": torch.__version__,
            "num_threads": 1,
        },
        "commit_info": {"id": "abc"},
        "benchmarks": [*recs, guide],
        "datetime": "2025-01-01T00:00:00",
        "version": "5.1.0",
        "shufflenet_bench": {
            "settings": {"quick": True, "notes": ["a note"]},
            "skipped": [{"what": "x", "reason": "why"}],
        },
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    assert report.main([str(path), "--no-plots"]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "## channel_shuffle — forward" in text
    assert "## Guideline G1" in text and "76.20" in text and "100.00" in text  # paper figure, 1/10 ms
    assert "> note: a note" in text and "- x: why" in text
    row = next(line for line in text.splitlines() if line.startswith("| s |"))
    # eager 2000 µs, kernel 1000 µs at 1 GB/s = 50 % of a 2 GB/s copy, 2x eager.
    assert "2,000.0" in row and "1,000.0" in row and "| 50.00 |" in row and "| 2.00 |" in row and "yes" in row
    summary = report.summary_rows(doc)
    assert summary[0][:5] == ["channel_shuffle", "fwd", "kernel_cpu", 1, pytest.approx(2.0)]


def test_roofline_and_guideline_trend(tmp_path: Path) -> None:
    # A pointwise case: 1e6 multiply-adds over 1e6 bytes in 1 ms (2 FLOP/byte, 2 GFLOP/s), its copy at 4 GB/s.
    recs = [
        _record("pw[a]", "eager", "eager", 1e-3, 10**6, family="pointwise_conv", flops=10**6),
        _record("pw[a]", "copy", "copy", 2.5e-4, 10**6, family="pointwise_conv", flops=10**6),
    ]
    add_derived(recs)
    guide = []
    for i, (row, paper, median) in enumerate((("1:1", 80.0, 1e-2), ("1:2", 60.0, 2e-2))):
        for provider, role in (("eager", "eager"), ("kernels", "kernel")):
            r = _record(
                f"guideline_G1[{row}-x1]",
                provider,
                role,
                median / (2 if provider == "kernels" else 1),
                10**6,
                family="guideline_G1",
                flops=10**6 * (i + 1),
                paper=paper,
                paper_unit="images/s",
                structure="s",
            )
            r["params"]["width"] = 1
            guide.append(r)
    doc = {
        "machine_info": {"device": "cpu", "cpu_name": "test cpu", "num_threads": 1},
        "commit_info": {"id": "abc"},
        "benchmarks": [*recs, *guide],
        "datetime": "2025-01-01T00:00:00",
        "version": "5.1.0",
        "shufflenet_bench": {
            "settings": {"quick": True},
            "skipped": [],
            "peaks": {
                "gemm": [{"dtype": "float32", "n": 64, "median_s": 1.0, "gflops": 50.0}],
                "copy": {"buffer_bytes": 2**20, "bytes": 2**21, "median_s": 1.0, "gbps": 3.0},
            },
        },
    }
    (pt,) = report.roofline_points(doc, "pointwise_conv")
    assert pt["intensity"] == pytest.approx(2.0) and pt["gflops"] == pytest.approx(2.0)
    bw, source, gemm = report.roofline_ceilings(doc, "pointwise_conv")
    assert bw == pytest.approx(4.0) and "copy" in source and gemm == {"float32": 50.0}
    bw, source, _ = report.roofline_ceilings(doc, "units")  # no copy of its own: the run's large copy
    assert bw == pytest.approx(3.0) and "1 MiB" in source
    written = report.write_report(doc, tmp_path, plots=_has_matplotlib())
    text = (tmp_path / "report.md").read_text()
    assert "square GEMM float32 50.0 GFLOP/s" in text
    row = next(line for line in text.splitlines() if line.startswith("| 1:2 |"))
    # Measured 50 batches/s against 100 in row 1 (0.50); the paper 60 against 80 (0.75).
    assert row.endswith("| 0.50 | 0.75 |")
    if _has_matplotlib():
        names = {p.name for p in written}
        assert {"roofline_pointwise_conv.png", "guidelines_trend.png"} <= names
        assert "roofline_guideline_G1.png" not in names and "roofline_channel_shuffle.png" not in names


def test_tiny_cpu_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [
        "--device",
        "cpu",
        "--ops",
        "channel_shuffle",
        "--max-shapes",
        "1",
        "--layouts",
        "nchw",
        "--directions",
        "fwd",
        "--batch",
        "2",
        "--compile-limit",
        "0",
        "--reps",
        "3",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= doc.keys()
    assert doc["machine_info"]["torch_version"] == torch.__version__
    peaks = doc["shufflenet_bench"]["peaks"]
    assert peaks["gemm"][0]["dtype"] == "float32" and peaks["gemm"][0]["gflops"] > 0
    assert peaks["copy"]["gbps"] > 0
    by_provider = {b["extra_info"]["provider"]: b for b in doc["benchmarks"]}
    assert {"eager", "eager_native", "copy"} <= by_provider.keys()
    for b in doc["benchmarks"]:
        assert b["group"] == "channel_shuffle-fwd[v2x1.0-s2-N2-float32-nchw]"
        assert b["stats"]["median"] > 0 and b["stats"]["rounds"] >= 3
        assert b["extra_info"]["mac_bytes"] == 2 * 2 * 116 * 28 * 28 * 4
        assert b["extra_info"]["gbps"] == pytest.approx(
            b["extra_info"]["mac_bytes"] / b["stats"]["median"] / 1e9
        )
        assert statistics.median(b["stats"]["data"]) == pytest.approx(b["stats"]["median"])
    if sk.NATIVE_AVAILABLE:
        kernel = by_provider["kernel_cpu"]["extra_info"]
        assert kernel["matches_reference"] is True
        assert kernel["speedup_vs_eager"] > 0 and kernel["pct_of_copy"] > 0
    assert (out / "report.md").read_text().startswith("# shufflenet-kernels benchmark report")
    if _has_matplotlib():
        assert (out / "bandwidth_channel_shuffle.png").stat().st_size > 0
        assert (out / "speedup_channel_shuffle.png").stat().st_size > 0


def test_results_load_in_pytest_benchmark(tmp_path: Path) -> None:
    storage = pytest.importorskip("pytest_benchmark.storage.file")
    logger = pytest.importorskip("pytest_benchmark.logger")
    out = tmp_path / "out"
    assert (
        main(
            [
                "--device",
                "cpu",
                "--ops",
                "concat_shuffle",
                "--max-shapes",
                "1",
                "--layouts",
                "nchw",
                "--directions",
                "bwd",
                "--batch",
                "1",
                "--compile-limit",
                "0",
                "--reps",
                "3",
                "--no-plots",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    store = storage.FileStorage(tmp_path, default_machine_id="x", logger=logger.Logger(level=0))
    loaded = list(store.load_benchmarks(str(out / "results.json")))
    assert loaded and all("median" in b and "extra_info" in b for b in loaded)


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("path", ["fused", "per-op", "zero-copy"])
def test_page_faults_child_per_path(path: str) -> None:
    """``python -m bench.page_faults --path``: the child process converts the model as
    the path says, runs it, and reports faults and time per forward."""
    from bench import page_faults

    result = page_faults.measure({}, batch=1, forwards=1, threads=1, path=path)
    assert result["faults"] >= 0 and result["ms"] > 0
    assert result["fuse_units"] == (path != "per-op")
    assert (result["stage"] == "ZeroCopyStage") == (path == "zero-copy")
