"""``python -m bench.cpu_parity --quick``: runs, checks every case, writes the table."""

from __future__ import annotations

import re

import pytest

from bench import cpu_parity

ROW = re.compile(r"^\| (\w+) \| (fwd|bwd) \| ([\w.-]+) \| .+ \| (nchw|channels_last) \| 1 \| 1 \| "
                 r"[\d.]+ \| [\d.]+ \| ([\d.]+) \| (ok|MISMATCH) \|$")


@pytest.mark.parametrize("op,label", [("channel_shuffle", "v2x1.0-s4"), ("depthwise_conv2d", "v2x1.0-s3-stride2")])
def test_cpu_parity_quick(tmp_path, capsys, op, label):
    out = tmp_path / "parity.md"
    args = ["--quick", "--ops", op, "--filter", label, "--rounds", "1", "--out", str(out)]
    assert cpu_parity.main(args) == 0
    text = out.read_text()
    rows = [m for m in map(ROW.match, text.splitlines()) if m]
    directions = {"fwd", "bwd"} if op == "depthwise_conv2d" else {"fwd"}
    # One row per direction and layout, every one checked against PyTorch.
    assert sorted((m[2], m[4]) for m in rows) == sorted((d, lay) for d in directions
                                                        for lay in ("nchw", "channels_last"))
    assert all(m[1] == op and m[3] == label and m[6] == "ok" and float(m[5]) > 0 for m in rows)
    assert f"| {op} | fwd | 2 |" in text  # the geometric mean over the two layouts
    assert "| **all** |" in text
    printed = capsys.readouterr().out
    assert "expected duration" in printed and "| **all** |" in printed


def test_cpu_parity_covers_every_op_and_direction():
    cases = cpu_parity.parity_cases()
    kinds = {(c.op, c.direction) for c in cases}
    assert kinds == {("channel_shuffle", "fwd"), ("concat_shuffle", "fwd"), ("pointwise_conv", "fwd"),
                     ("pointwise_conv", "bwd"), ("depthwise_conv2d", "fwd"), ("depthwise_conv2d", "bwd")}
    labels = {c.label for c in cases}
    assert any(lab.startswith("v1") for lab in labels) and any(lab.startswith("v2") for lab in labels)
    # V1's fused shuffle and both depthwise strides are among the cases.
    assert any(c.op == "pointwise_conv" and " g3/s3 " in c.shape for c in cases)
    assert {c.shape.split()[-1] for c in cases if c.op == "depthwise_conv2d"} == {"s1", "s2"}
