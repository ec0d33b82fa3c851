"""``report.md`` and PNG plots from a ``results.json``; ``python -m bench.report results.json``.

Tables: a summary (per op and direction: geometric-mean speedups of each kernel
backend over eager and ``torch.compile``, median achieved bandwidth and % of the copy
rate), one table per op family and direction (one row per case), the units and
models, and one table per guideline experiment next to the paper's figures. Plots:
achieved bandwidth against bytes moved with the copy roofline, speedup bars per shape,
and the guideline throughputs. Without matplotlib the plots are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import cuda_resources
from .paper_tables import CITATION as PAPER_CITATION

OP_FAMILIES = ("channel_shuffle", "concat_shuffle", "pointwise_conv", "depthwise_conv2d")
MODULE_FAMILIES = ("units", "models")


def load(path: str | Path) -> dict[str, Any]:
    """Reads a ``results.json`` written by ``python -m bench``."""
    return json.loads(Path(path).read_text())


def _geomean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}" if abs(v) >= 0.01 else f"{v:.2e}"
    return str(v)


def _us(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1e6:,.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cases(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Records grouped by case (pytest-benchmark ``group``), in run order."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for b in doc["benchmarks"]:
        out[b["group"]].append(b)
    return out


def _by_provider(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["extra_info"]["provider"]: r for r in records}


def _kernel_providers(records: list[dict[str, Any]]) -> list[str]:
    names = []
    for r in records:
        p = r["extra_info"]["provider"]
        if r["extra_info"]["role"] == "kernel" and p not in names:
            names.append(p)
    return names


# ---- summary ---------------------------------------------------------------------


def summary_rows(doc: dict[str, Any]) -> list[list[Any]]:
    """Per (family, direction, kernel provider): cases, geomean speedups, median GB/s and % of copy."""
    acc: dict[tuple[str, str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for b in doc["benchmarks"]:
        e = b["extra_info"]
        if e["role"] != "kernel":
            continue
        a = acc[(e["family"], e["direction"], e["provider"])]
        a["n"].append(1)
        a["eager"].append(e.get("speedup_vs_eager"))
        if e.get("speedup_vs_compile") is not None:
            a["compile"].append(e["speedup_vs_compile"])
        if e.get("gbps") is not None:
            a["gbps"].append(e["gbps"])
        if e.get("pct_of_copy") is not None:
            a["pct"].append(e["pct_of_copy"])
        if e.get("matches_reference") is not None:
            a["ok"].append(e["matches_reference"])
    rows = []
    for (fam, direction, provider), a in acc.items():
        rows.append(
            [
                fam,
                direction,
                provider,
                len(a["n"]),
                _geomean(a["eager"]),
                _geomean(a["compile"]),
                len(a["compile"]),
                statistics.median(a["gbps"]) if a["gbps"] else None,
                statistics.median(a["pct"]) if a["pct"] else None,
                (f"{sum(a['ok'])}/{len(a['ok'])}" if a["ok"] else "–"),
            ]
        )
    return rows


SUMMARY_HEADER = (
    "op",
    "dir",
    "kernel",
    "cases",
    "x eager (geomean)",
    "x compile (geomean)",
    "compiled cases",
    "GB/s (median)",
    "% of copy (median)",
    "matches ref",
)


def format_summary(doc: dict[str, Any]) -> str:
    """The summary table as plain text (printed at the end of a run)."""
    rows = [[_fmt(c) for c in r] for r in summary_rows(doc)]
    env = doc["machine_info"]
    where = env.get("gpu_name") or env.get("cpu_name") or env.get("processor")
    title = (
        f"shufflenet-kernels bench on {env.get('device')} ({where}), torch {env.get('torch_version')}, "
        f"{env.get('num_threads')} threads"
    )
    if not rows:
        return title + "\n(no kernel measurements)"
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(SUMMARY_HEADER)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(SUMMARY_HEADER, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


# ---- markdown ----------------------------------------------------------------------


def _header(doc: dict[str, Any]) -> list[str]:
    m, c = doc["machine_info"], doc.get("commit_info", {})
    s = doc.get("shufflenet_bench", {}).get("settings", {})
    lines = [
        "# shufflenet-kernels benchmark report",
        "",
        f"- device: **{m.get('device')}** — {m.get('gpu_name') or m.get('cpu_name')}"
        f" ({(m.get('cpu') or {}).get('count')} CPUs, {m.get('num_threads')} torch threads)",
        f"- torch {m.get('torch_version')}, Triton {m.get('triton_version')}, CUDA {m.get('cuda_version')}"
        + (
            f", cuDNN {m.get('cudnn_version')} (benchmark mode {m.get('cudnn_benchmark')})"
            if m.get("cudnn_version")
            else ""
        ),
        f"- date {doc.get('datetime')}; commit {str(c.get('id'))[:12]}{' (dirty)' if c.get('dirty') else ''}",
        f"- mode: {'quick' if s.get('quick') else ('full' if s.get('full') else 'default')}; batches "
        f"{s.get('batches')}; dtypes {s.get('dtypes')}; layouts {s.get('layouts')}; kernel backends "
        f"{s.get('kernel_backends')}; torch.compile limit per op and direction {s.get('compile_limit')}; "
        f"timing {s.get('timing')}; wall {s.get('wall_s')} s",
        "",
        "Times are medians. MAC = bytes each op must read and write once "
        "(`shufflenet_kernels.mac`); GB/s = MAC / time; % of copy = that over the rate of a "
        "`dst.copy_(src)` moving the same bytes in the same run. FLOPs are multiply-adds. "
        "Speedups are eager time / kernel time and compiled time / kernel time.",
        "",
    ]
    peaks = doc.get("shufflenet_bench", {}).get("peaks")
    if peaks:
        gemm = ", ".join(f"{g['dtype']} {g['gflops']:,.1f} GFLOP/s (n={g['n']})" for g in peaks.get("gemm", []))
        copy = peaks.get("copy") or {}
        lines += [
            f"Ceilings measured in this run (`bench.peak`): square GEMM {gemm}; copy of a "
            f"{copy.get('buffer_bytes', 0) / 2**20:.0f} MiB buffer {copy.get('gbps', 0):,.1f} GB/s (read + "
            "written). The roofline plots use "
            "them (the bandwidth line of an op family is its own cases' copy rate).",
            "",
        ]
    for note in s.get("notes", []):
        lines.append(f"> note: {note}")
    if s.get("notes"):
        lines.append("")
    return lines


def _op_tables(doc: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    cases = _cases(doc)
    for fam in OP_FAMILIES:
        for direction in ("fwd", "bwd"):
            groups = [
                g
                for g, rs in cases.items()
                if rs[0]["extra_info"]["family"] == fam and rs[0]["extra_info"]["direction"] == direction
            ]
            if not groups:
                continue
            kernels = []
            for g in groups:
                kernels += [k for k in _kernel_providers(cases[g]) if k not in kernels]
            others = []
            for g in groups:
                others += [
                    r["extra_info"]["provider"]
                    for r in cases[g]
                    if r["extra_info"]["role"] == "other" and r["extra_info"]["provider"] not in others
                ]
            header = [
                "shape",
                "N",
                "dtype",
                "layout",
                "MAC MB",
                "eager µs",
                *[f"{o} µs" for o in others],
                "compile µs",
                "copy µs",
                "copy GB/s",
            ]
            for k in kernels:
                header += [f"{k} µs", f"{k} GB/s", "% copy", "× eager", "× compile", "ok"]
            rows = []
            for g in groups:
                p = _by_provider(cases[g])
                e0 = cases[g][0]["extra_info"]
                med = {name: r["stats"]["median"] for name, r in p.items()}
                row = [
                    e0["label"],
                    e0.get("batch"),
                    e0.get("dtype"),
                    e0.get("layout"),
                    (e0.get("mac_bytes") or 0) / 1e6,
                    _us(med.get("eager")),
                    *[_us(med.get(o)) for o in others],
                    _us(med.get("compile")),
                    _us(med.get("copy")),
                    p["copy"]["extra_info"].get("gbps") if "copy" in p else None,
                ]
                for k in kernels:
                    ke = p[k]["extra_info"] if k in p else {}
                    row += [
                        _us(med.get(k)),
                        ke.get("gbps"),
                        ke.get("pct_of_copy"),
                        ke.get("speedup_vs_eager"),
                        ke.get("speedup_vs_compile"),
                        ke.get("matches_reference"),
                    ]
                rows.append(row)
            lines += [
                f"## {fam} — {'forward' if direction == 'fwd' else 'backward'}",
                "",
                _table(header, rows),
                "",
            ]
    return lines


def _module_tables(doc: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    cases = _cases(doc)
    for fam in MODULE_FAMILIES:
        groups = [g for g, rs in cases.items() if rs[0]["extra_info"]["family"] == fam]
        if not groups:
            continue
        providers: list[str] = []
        for g in groups:
            providers += [
                r["extra_info"]["provider"] for r in cases[g] if r["extra_info"]["provider"] not in providers
            ]
        header = [
            "case",
            "N",
            "dtype",
            "layout",
            "MFLOPs",
            *[f"{p} ms" for p in providers],
            "images/s (best)",
        ]
        header += [f"{p} × eager" for p in providers if p not in ("eager", "compile")]
        header += [f"{p} × compile" for p in providers if p not in ("eager", "compile")]
        # V2 units: GB/s of each provider against the bytes the fused unit must move.
        fused_mac = any("fused_mac_bytes" in cases[g][0]["extra_info"] for g in groups)
        if fused_mac:
            header += ["fused MAC MB", *[f"{p} GB/s (fused MAC)" for p in providers]]
        rows = []
        for g in groups:
            p = _by_provider(cases[g])
            e0 = cases[g][0]["extra_info"]
            best = min(r["stats"]["median"] for r in p.values())
            row = [
                e0["label"],
                e0.get("batch"),
                e0.get("dtype"),
                e0.get("layout"),
                (e0.get("flops") or 0) / 1e6,
                *[(p[n]["stats"]["median"] * 1e3 if n in p else None) for n in providers],
                (e0.get("batch") or 1) / best,
            ]
            fused = [n for n in providers if n not in ("eager", "compile")]
            row += [p[n]["extra_info"].get("speedup_vs_eager") if n in p else None for n in fused]
            row += [p[n]["extra_info"].get("speedup_vs_compile") if n in p else None for n in fused]
            if fused_mac:
                fmac = e0.get("fused_mac_bytes")
                row += [fmac / 1e6 if fmac else None]
                row += [p[n]["extra_info"].get("fused_gbps") if n in p else None for n in providers]
            rows.append(row)
        lines += [
            f"## {'Units (ShuffleNet V1/V2)' if fam == 'units' else 'Whole models (224x224)'}",
            "",
            _table(header, rows),
            "",
        ]
    return lines


def _guideline_tables(doc: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    cases = _cases(doc)
    for table in ("G1", "G2", "G3", "G4"):
        groups = [g for g, rs in cases.items() if rs[0]["extra_info"]["family"] == f"guideline_{table}"]
        if not groups:
            continue
        unit = cases[groups[0]][0]["extra_info"].get("paper_unit")
        header = [
            "row",
            "width",
            "structure",
            "MFLOPs",
            "MAC MB",
            "eager batches/s",
            "kernels batches/s",
            "× eager",
            "paper",
            "eager ÷ row 1",
            "paper ÷ row 1",
        ]
        rows = []
        series = _guideline_series(cases, groups)
        for g in groups:
            p = _by_provider(cases[g])
            e0 = cases[g][0]["extra_info"]
            width = cases[g][0]["params"]["width"]
            s = series[width]
            i = s["groups"].index(g)
            rows.append(
                [
                    _guideline_row(g),
                    f"x{width}",
                    e0.get("structure"),
                    (e0.get("flops") or 0) / 1e6,
                    (e0.get("mac_bytes") or 0) / 1e6,
                    1 / p["eager"]["stats"]["median"] if "eager" in p else None,
                    1 / p["kernels"]["stats"]["median"] if "kernels" in p else None,
                    p["kernels"]["extra_info"].get("speedup_vs_eager") if "kernels" in p else None,
                    e0.get("paper"),
                    _normalised(s["eager"])[i],
                    _normalised(s["paper"])[i],
                ]
            )
        batch = cases[groups[0]][0]["params"].get("batch")
        lines += [
            f"## Guideline {table} (56x56, 10 blocks, batch {batch}; paper column: {unit})",
            "",
            _table(header, rows),
            "",
            f"Paper: {PAPER_CITATION}, Table {table[1]} (`bench/paper_tables.py`). The ÷ row 1 columns "
            "divide each throughput by the first row's of the same width: the trend the table shows.",
            "",
        ]
    return lines


def _guideline_row(group: str) -> str:
    return group.split("[", 1)[1].rsplit("-x", 1)[0]


def _guideline_series(
    cases: dict[str, list[dict[str, Any]]], groups: list[str]
) -> dict[int, dict[str, list[Any]]]:
    """Per width, in run order: the groups, row names, paper figures and eager/kernel throughputs."""
    out: dict[int, dict[str, list[Any]]] = {}
    for g in groups:
        width = cases[g][0]["params"]["width"]
        s = out.setdefault(width, {"groups": [], "rows": [], "paper": [], "eager": [], "kernels": []})
        p = _by_provider(cases[g])
        s["groups"].append(g)
        s["rows"].append(_guideline_row(g))
        s["paper"].append(cases[g][0]["extra_info"].get("paper"))
        s["eager"].append(1 / p["eager"]["stats"]["median"] if "eager" in p else None)
        s["kernels"].append(1 / p["kernels"]["stats"]["median"] if "kernels" in p else None)
    return out


def _normalised(values: list[float | None]) -> list[float | None]:
    """``values`` divided by the first one (None where a value or the first is missing)."""
    first = values[0] if values else None
    return [v / first if v and first else None for v in values]


# ---- whole models on the CPU against ONNX Runtime / OpenVINO / torch.compile --------------


def models_cpu_markdown(doc: dict[str, Any], title: str = "## Whole models on the CPU: baselines") -> list[str]:
    """Markdown of a ``bench.models_cpu`` document: set-up, a ms (× best) table and a per-contender table."""
    s, env = doc.get("settings", {}), doc.get("environment", {})
    v = env.get("versions", {})
    lines = [
        title,
        "",
        f"- CPU: {env.get('cpu_name')} ({env.get('cpus_available')} of {env.get('cpu_count')} CPUs available); "
        f"torch {v.get('torch')}, torchvision {v.get('torchvision')}, ONNX Runtime {v.get('onnxruntime')}, "
        f"OpenVINO {v.get('openvino')}; commit {str(env.get('commit'))[:12]}; {env.get('date')}; "
        f"load average at the end {env.get('loadavg')}",
        f"- {s.get('dtype')}, {s.get('input')} input, weights from seed {s.get('seed')} (BN statistics "
        f"randomised); {s.get('rounds')} rounds x {s.get('calls')} calls per contender, round-robin in lock-step, "
        f"one process per contender pinned to the same CPUs; wall {s.get('wall_s')} s",
        "- ms = median over all calls; (× best) = that over the row's fastest median; max abs err = largest "
        "|logit difference| from torchvision eager NCHW with the same weights and input (the largest |logit| "
        "beside it, for scale)",
        "",
    ]
    descriptions = doc.get("descriptions", {})
    if descriptions:
        lines += [f"- `{n}`: {d}" for n, d in descriptions.items()] + [""]
    for note in doc.get("notes", []):
        lines.append(f"> note: {note}")
    if doc.get("notes"):
        lines.append("")
    rows = doc.get("rows", [])
    present: list[str] = []
    for r in rows:
        present += [n for n in r["contenders"] if n not in present]
    order = [n for n in s.get("contenders", present) if n in present] + [
        n for n in present if n not in s.get("contenders", [])
    ]
    if not rows or not order:
        return [*lines, "(no measurements)", ""]
    wide = []
    for r in rows:
        cells: list[Any] = [r["width"], r["batch"], r["threads"]]
        for n in order:
            c = r["contenders"].get(n)
            if c and "median_s" in c:
                cells.append(f"{c['median_s'] * 1e3:.2f} ({c['vs_best']:.2f})")
            else:
                cells.append("failed" if n in r.get("skipped", {}) else "–")
        cells.append(r.get("best"))
        wide.append(cells)
    lines += [_table(["model", "N", "threads", *[f"{n} ms (× best)" for n in order], "best"], wide), ""]
    detail = []
    for r in rows:
        for n in order:
            c = r["contenders"].get(n)
            if not c or "median_s" not in c:
                continue
            info = c.get("info", {})
            facts = []
            if "INFERENCE_PRECISION_HINT" in info:
                facts.append(f"precision hint {info['INFERENCE_PRECISION_HINT']}")
            if "export" in info:
                facts.append(str(info["export"]).split(" (")[0])
            if "inductor_freezing" in info:
                facts.append(f"freezing={info['inductor_freezing']}")
            detail.append(
                [
                    r["width"],
                    r["batch"],
                    r["threads"],
                    n,
                    c["median_s"] * 1e3,
                    f"{c['q1_s'] * 1e3:.2f}–{c['q3_s'] * 1e3:.2f}",
                    c["vs_best"],
                    f"{c['max_abs_err']:.2e} ({c['ref_max']:.3g})",
                    c.get("build_s"),
                    "; ".join(facts),
                ]
            )
        for n, why in r.get("skipped", {}).items():
            detail.append([r["width"], r["batch"], r["threads"], n, None, "–", None, "–", None, f"failed: {why}"])
    header = ["model", "N", "threads", "contender", "ms", "q1–q3 ms", "× best", "max abs err (logit max)",
              "build s", "notes"]
    lines += [_table(header, detail), ""]
    skipped = doc.get("skipped", {})
    if skipped:
        lines += ["Not run: " + "; ".join(f"`{n}` ({why})" for n, why in skipped.items()), ""]
    return lines


def _skips(doc: dict[str, Any]) -> list[str]:
    skipped = doc.get("shufflenet_bench", {}).get("skipped", [])
    if not skipped:
        return []
    lines = ["## Not measured", ""]
    lines += [f"- {s['what']}: {s['reason']}" for s in skipped[:200]]
    if len(skipped) > 200:
        lines.append(f"- ... and {len(skipped) - 200} more")
    return lines + [""]


# ---- plots ---------------------------------------------------------------------------


def _plots(doc: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    cases = _cases(doc)
    device = doc["machine_info"].get("gpu_name") or doc["machine_info"].get("cpu_name")
    for fam in OP_FAMILIES:
        recs = [r for rs in cases.values() for r in rs if r["extra_info"]["family"] == fam]
        if not recs:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        # The roofline: median copy rate at each size (several cases can share a size).
        copy_at: dict[int, list[float]] = defaultdict(list)
        for r in recs:
            if r["extra_info"]["role"] == "copy" and r["extra_info"].get("gbps"):
                copy_at[r["extra_info"]["mac_bytes"]].append(r["extra_info"]["gbps"])
        if copy_at:
            sizes = sorted(copy_at)
            ax.plot(
                sizes, [statistics.median(copy_at[x]) for x in sizes], "k-", lw=1.5, label="copy (roofline)"
            )
        providers = sorted({r["extra_info"]["provider"] for r in recs} - {"copy"})
        for i, provider in enumerate(providers):
            for direction, marker in (("fwd", "o"), ("bwd", "^")):
                pts = [
                    (r["extra_info"]["mac_bytes"], r["extra_info"]["gbps"])
                    for r in recs
                    if r["extra_info"]["provider"] == provider
                    and r["extra_info"]["direction"] == direction
                    and r["extra_info"].get("gbps")
                ]
                if pts:
                    ax.scatter(
                        [p[0] for p in pts],
                        [p[1] for p in pts],
                        color=f"C{i}",
                        marker=marker,
                        s=18,
                        label=f"{provider} {direction}",
                    )
        ax.set_xscale("log")
        ax.set_xlabel("MAC (bytes moved)")
        ax.set_ylabel("achieved GB/s")
        ax.set_title(f"{fam}: bandwidth vs size ({device})", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
        path = out / f"bandwidth_{fam}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

        labels, vs_eager, vs_compile = [], [], []
        for g, rs in cases.items():
            e0 = rs[0]["extra_info"]
            if e0["family"] != fam:
                continue
            kernels = _kernel_providers(rs)
            if not kernels:
                continue
            ke = _by_provider(rs)[kernels[0]]["extra_info"]
            labels.append(g.split("[", 1)[1].rstrip("]") + f" {e0['direction']}")
            vs_eager.append(ke.get("speedup_vs_eager") or 0)
            vs_compile.append(ke.get("speedup_vs_compile") or 0)
        if labels:
            fig, ax = plt.subplots(figsize=(max(6, 0.32 * len(labels)), 4.5))
            xs = range(len(labels))
            ax.bar([x - 0.2 for x in xs], vs_eager, 0.4, label="× eager")
            ax.bar([x + 0.2 for x in xs], vs_compile, 0.4, label="× torch.compile (0: not measured)")
            ax.axhline(1.0, color="k", lw=0.8)
            ax.set_xticks(list(xs))
            ax.set_xticklabels(labels, rotation=75, ha="right", fontsize=6)
            ax.set_ylabel("speedup of the kernel")
            ax.set_title(f"{fam}: speedup per shape ({device})", fontsize=9)
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = out / f"speedup_{fam}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)

    written += _roofline_plots(doc, out, plt)
    written += _guideline_trend_plot(doc, out, plt)
    guide = [(g, rs) for g, rs in cases.items() if rs[0]["extra_info"]["family"].startswith("guideline_")]
    if guide:
        fig, ax = plt.subplots(figsize=(max(6, 0.4 * len(guide)), 4.5))
        xs = range(len(guide))
        eager = [
            1 / _by_provider(rs)["eager"]["stats"]["median"] if "eager" in _by_provider(rs) else 0
            for _, rs in guide
        ]
        kern = [
            1 / _by_provider(rs)["kernels"]["stats"]["median"] if "kernels" in _by_provider(rs) else 0
            for _, rs in guide
        ]
        ax.bar([x - 0.2 for x in xs], eager, 0.4, label="eager")
        ax.bar([x + 0.2 for x in xs], kern, 0.4, label="kernels")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(
            [g.split("guideline_", 1)[1] for g, _ in guide], rotation=75, ha="right", fontsize=6
        )
        ax.set_ylabel("batches/s")
        ax.set_title(f"ShuffleNet V2 guideline experiments ({device})", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / "guidelines.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def roofline_points(doc: dict[str, Any], family: str) -> list[dict[str, Any]]:
    """Per timed record of ``family`` with FLOPs and MAC: provider, direction, dtype, FLOP/byte and GFLOP/s.

    FLOP = 2 x the recorded multiply-adds; bytes = the recorded MAC bytes (for units
    and models, the unfused eager graph's traffic).
    """
    pts = []
    for b in doc["benchmarks"]:
        e = b["extra_info"]
        if e["family"] != family or e["role"] == "copy":
            continue
        flops, mac_bytes, t = e.get("flops"), e.get("mac_bytes"), b["stats"]["median"]
        if not flops or not mac_bytes or not t:
            continue
        pts.append(
            {
                "provider": e["provider"],
                "direction": e["direction"],
                "dtype": e.get("dtype"),
                "intensity": 2 * flops / mac_bytes,
                "gflops": 2 * flops / t / 1e9,
            }
        )
    return pts


def roofline_ceilings(doc: dict[str, Any], family: str) -> tuple[float | None, str, dict[str, float]]:
    """``(GB/s, its source, {dtype: peak GFLOP/s})`` for ``family``'s roofline.

    The bandwidth is the median rate of the copy baseline of the family's own cases
    (same bytes, same run) when it has one, else the run's large-buffer copy; the
    compute peaks are the run's square-GEMM rates (``bench.peak``).
    """
    peaks = doc.get("shufflenet_bench", {}).get("peaks") or {}
    gemm = {g["dtype"]: g["gflops"] for g in peaks.get("gemm", [])}
    copies = [
        b["extra_info"]["gbps"]
        for b in doc["benchmarks"]
        if b["extra_info"]["family"] == family and b["extra_info"]["role"] == "copy" and b["extra_info"].get("gbps")
    ]
    if copies:
        return statistics.median(copies), "copy of each case's MAC bytes (median)", gemm
    copy = peaks.get("copy") or {}
    if copy.get("gbps"):
        return copy["gbps"], f"copy of a {copy['buffer_bytes'] / 2**20:.0f} MiB buffer", gemm
    return None, "", gemm


def _roofline_plots(doc: dict[str, Any], out: Path, plt: Any) -> list[Path]:
    from matplotlib.ticker import NullFormatter

    written: list[Path] = []
    device = doc["machine_info"].get("gpu_name") or doc["machine_info"].get("cpu_name")
    for fam in (*OP_FAMILIES, *MODULE_FAMILIES):
        pts = roofline_points(doc, fam)
        if not pts:  # the shuffles do no arithmetic: their bandwidth plot is the whole story
            continue
        bw, bw_source, gemm = roofline_ceilings(doc, fam)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        xs = [p["intensity"] for p in pts]
        lo, hi = min(xs) / 3, max(xs) * 3
        for i, (dtype, peak) in enumerate(sorted(gemm.items())):
            if bw:  # show the ridge point, where the bandwidth line meets the peak
                lo, hi = min(lo, peak / bw / 3), max(hi, 3 * peak / bw)
            ax.axhline(
                peak, color="k", ls=["-", "--", ":"][i % 3], lw=1.2, label=f"GEMM peak {dtype}: {peak:,.1f} GFLOP/s"
            )
        if bw:
            grid = [lo * (hi / lo) ** (k / 64) for k in range(65)]
            top = max(gemm.values()) if gemm else None
            ax.plot(
                grid,
                [x * bw if top is None else min(top, x * bw) for x in grid],
                color="0.4",
                lw=1.5,
                label=f"bandwidth {bw:,.1f} GB/s ({bw_source})",
            )
        providers = sorted({p["provider"] for p in pts})
        for i, provider in enumerate(providers):
            for direction, marker in (("fwd", "o"), ("bwd", "^")):
                sel = [p for p in pts if p["provider"] == provider and p["direction"] == direction]
                if sel:
                    ax.scatter(
                        [p["intensity"] for p in sel],
                        [p["gflops"] for p in sel],
                        color=f"C{i}",
                        marker=marker,
                        s=18,
                        label=f"{provider} {direction}",
                    )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_minor_formatter(NullFormatter())  # minor labels of a short log range overlap
        ax.set_xlabel("arithmetic intensity (FLOP per MAC byte)")
        ax.set_ylabel("achieved GFLOP/s")
        ax.set_title(f"{fam}: roofline ({device})", fontsize=9)
        ax.legend(fontsize=6)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        path = out / f"roofline_{fam}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _guideline_trend_plot(doc: dict[str, Any], out: Path, plt: Any) -> list[Path]:
    """One panel per guideline table and width: throughput ÷ the first row's, measured and the paper's."""
    cases = _cases(doc)
    panels = []
    for table in ("G1", "G2", "G3", "G4"):
        groups = [g for g, rs in cases.items() if rs[0]["extra_info"]["family"] == f"guideline_{table}"]
        for width, s in sorted(_guideline_series(cases, groups).items()):
            panels.append((table, width, s))
    if not panels:
        return []
    widths = sorted({w for _, w, _ in panels})
    tables = [t for t in ("G1", "G2", "G3", "G4") if any(p[0] == t for p in panels)]
    fig, axes = plt.subplots(
        len(widths), len(tables), figsize=(3.4 * len(tables), 3.0 * len(widths)), squeeze=False
    )
    for ax in axes.flat:
        ax.set_visible(False)
    unit = None
    for table, width, s in panels:
        ax = axes[widths.index(width)][tables.index(table)]
        ax.set_visible(True)
        xs = range(len(s["rows"]))
        for key, style, label in (
            ("paper", "k--o", "paper"),
            ("eager", "C0-o", "eager (measured)"),
            ("kernels", "C1-s", "kernels (measured)"),
        ):
            ys = _normalised(s[key])
            if any(y is not None for y in ys):
                ax.plot(
                    [x for x, y in zip(xs, ys, strict=True) if y is not None],
                    [y for y in ys if y is not None],
                    style,
                    ms=4,
                    lw=1.2,
                    label=label,
                )
        ax.axhline(1.0, color="0.6", lw=0.6)
        ax.set_xticks(list(xs))
        ax.set_xticklabels(s["rows"], rotation=30, ha="right", fontsize=6)
        ax.set_title(f"{table}, width x{width}", fontsize=8)
        ax.set_ylabel("throughput ÷ row 1", fontsize=7)
        ax.tick_params(axis="y", labelsize=6)
        ax.legend(fontsize=6)
        unit = unit or cases[s["groups"][0]][0]["extra_info"].get("paper_unit")
    device = doc["machine_info"].get("gpu_name") or doc["machine_info"].get("cpu_name")
    fig.suptitle(
        f"Guidelines G1–G4 normalised to each table's first row: {device} vs {PAPER_CITATION} ({unit})",
        fontsize=8,
    )
    fig.tight_layout()
    path = out / "guidelines_trend.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def write_report(doc: dict[str, Any], out: str | Path, plots: bool = True) -> list[Path]:
    """Writes ``report.md`` (and the PNG plots unless ``plots`` is False) to ``out``; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = _header(doc) + cuda_resources.report_lines(doc["machine_info"])
    lines += [
        "## Summary",
        "",
        _table(SUMMARY_HEADER, summary_rows(doc)) if summary_rows(doc) else "(no kernel measurements)",
        "",
    ]
    lines += _op_tables(doc) + _module_tables(doc)
    models_cpu = doc.get("shufflenet_bench", {}).get("models_cpu")
    if models_cpu:
        lines += models_cpu_markdown(models_cpu)
    lines += _guideline_tables(doc)
    written: list[Path] = []
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(
                "note: matplotlib is not installed; plots skipped (pip install matplotlib)", file=sys.stderr
            )
            lines += ["> note: plots not drawn (matplotlib missing)", ""]
        else:
            written = _plots(doc, out)
            if written:
                lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in written] + [""]
                lines += [
                    "Roofline plots: achieved GFLOP/s (2 x multiply-adds / median time) against FLOP per MAC "
                    "byte, log-log, one point per case and implementation, under the GEMM peak and the copy "
                    "bandwidth of this run. For units and models the bytes are the unfused eager graph's, so "
                    "fused code can sit above the bandwidth line. `guidelines_trend.png`: each G1–G4 row's "
                    "throughput divided by the first row's, measured beside the paper's.",
                    "",
                ]
    lines += _skips(doc)
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return [report, *written]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.report results.json [--out DIR]``: regenerate report.md and the plots."""
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    p.add_argument("results", type=Path)
    p.add_argument("--out", type=Path, default=None, help="default: the folder of results.json")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    doc = load(args.results)
    written = write_report(doc, args.out or args.results.parent, plots=not args.no_plots)
    print(format_summary(doc))
    print("wrote " + ", ".join(str(w) for w in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
