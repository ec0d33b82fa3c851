"""The wheel: built as a user would, installed into a fresh virtual environment that
has only torch, imported from outside the source tree, and used.

``pip install .`` runs the same PEP 517 ``build_wheel`` and installs its result, so
this covers it too. The wheel is built with the CPU kernels only (SHUFFLENET_NO_CUDA=1):
compiling the CUDA kernels a second time would double the test's minutes, and their
build is checked by tests/test_build.py. Needs the network or pip's cache (torch is
installed into the new environment).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("setup.py", "pyproject.toml", "README.md", "LICENSE", "csrc", "shufflenet_kernels", "triton_kernels")

# Run in the fresh environment, from a folder outside the source tree.
SMOKE = textwrap.dedent(
    """
    import pathlib, sys, torch
    import shufflenet_kernels as sk
    from shufflenet_kernels import _C, reference
    assert "site-packages" in sk.__file__, sk.__file__
    assert sk.NATIVE_AVAILABLE
    assert pathlib.Path(_C.__file__).name.endswith(".abi3.so"), _C.__file__
    x = torch.randn(2, 12, 5, 5)
    torch.testing.assert_close(torch.ops.shufflenet.channel_shuffle(x, 3), reference.channel_shuffle(x, 3),
                               rtol=0, atol=0)
    a, b = x.chunk(2, 1)
    torch.testing.assert_close(torch.ops.shufflenet.concat_shuffle(a, b, 2),
                               reference.concat_shuffle(a, b, 2), rtol=0, atol=0)
    w, bias = torch.randn(12, 4, 1, 1), torch.randn(12)
    torch.testing.assert_close(torch.ops.shufflenet.pointwise_conv(x, w, bias, 3, 3, True),
                               reference.pointwise_conv(x, w, bias, 3, 3, True))
    dw = torch.randn(12, 1, 3, 3)
    torch.testing.assert_close(
        torch.ops.shufflenet.depthwise_conv2d(x, dw, None, [1, 1], [1, 1], [1, 1], False),
        reference.depthwise_conv2d(x, dw, None, (1, 1), (1, 1), (1, 1), False))
    assert sk.has_triton_ops()  # torch's dependencies include Triton
    print("wheel ok", sk.__file__)
    """
)


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    tail = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}"
    return proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abi3 wheel tags checked on Linux")
def test_wheel_builds_installs_and_runs_outside_the_source_tree(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    torch_version = torch.__version__.split("+")[0]
    _run([python, "-m", "pip", "install", "--quiet", f"torch=={torch_version}",
          "setuptools>=77,<82", "wheel", "ninja"], cwd=tmp_path)

    build_env = {**os.environ, "SHUFFLENET_NO_CUDA": "1", "MAX_JOBS": str(os.cpu_count() or 2)}
    build_env.pop("PYTHONPATH", None)
    dist = tmp_path / "dist"
    _run([python, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(dist), str(src)],
         cwd=tmp_path, env=build_env)
    wheels = list(dist.glob("shufflenet_kernels-*.whl"))
    assert len(wheels) == 1, wheels
    assert "-cp310-abi3-" in wheels[0].name, f"{wheels[0].name} is not an abi3 wheel"
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", str(wheels[0])], cwd=tmp_path)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    # Not the test run's TRITON_INTERPRET: the interpreter needs numpy, which a
    # torch-only environment lacks (a user on a GPU does not interpret).
    run_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    out = _run([python, "-c", SMOKE], cwd=outside, env=run_env)
    assert "wheel ok" in out


def test_unbuilt_source_tree_says_so(tmp_path: Path) -> None:
    """Importing a source checkout that holds no build (what Python finds first when run
    from the repository's root after a non-editable install) warns and names the cause."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy2(REPO / "setup.py", checkout / "setup.py")
    (checkout / "csrc").mkdir()
    shutil.copy2(REPO / "csrc" / "ops.cpp", checkout / "csrc" / "ops.cpp")
    shutil.copytree(REPO / "shufflenet_kernels", checkout / "shufflenet_kernels",
                    ignore=shutil.ignore_patterns("__pycache__", "_C*"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # Without an editable install's finder, which would hand over the real checkout's _C:
    # what a non-editable install sees.
    script = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in "
        "getattr(f, '__module__', '')]; import shufflenet_kernels as sk; print(sk.NATIVE_AVAILABLE, sk.__file__)"
    )
    proc = subprocess.run([sys.executable, "-W", "always", "-c", script],
                          cwd=checkout, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("False " + str(checkout)), proc.stdout
    assert "imported from the source tree" in proc.stderr, proc.stderr
