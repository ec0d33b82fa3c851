"""setup.py's CUDA decision, on fake toolkits: it builds the CUDA kernels only from a
toolkit that is really there, and says why not otherwise.

The README's quick start is what CI runs: its two commands are extracted by
.ci/readme_commands.py, tested here too.
"""

from __future__ import annotations

import runpy
import stat
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def setup_py(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    """setup.py's functions (loaded without running setup()), in a clean environment."""
    for var in ("CUDA_HOME", "CUDA_PATH", "SHUFFLENET_CUDA", "SHUFFLENET_NO_CUDA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    module = runpy.run_path(str(REPO / "setup.py"), run_name="setup_under_test")
    # The functions' own globals (run_path returns a copy).
    module = module["find_cuda_toolkit"].__globals__
    module["ROOT"] = str(tmp_path)  # where the cudart link folder is made
    module["DEFAULT_CUDA_ROOT"] = str(tmp_path / "no-default-toolkit")
    module["_torch_cudart_dirs"] = lambda: []
    return module


def _script(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _toolkit(root: Path, release: str = "13.0", header: bool = True, cudart: bool = True) -> Path:
    """A fake toolkit whose nvcc answers --version and -v --dryrun as the real one does."""
    _script(root / "bin" / "nvcc", f"""case "$*" in
  *--dryrun*) echo '#$ _HERE_={root}/bin' >&2; echo '#$ TOP={root}/bin/..' >&2 ;;
  *--version*) echo 'Cuda compilation tools, release {release}, V{release}.88' ;;
esac
""")
    (root / "include").mkdir(parents=True, exist_ok=True)
    if header:
        (root / "include" / "cuda_runtime.h").write_text("")
    (root / "lib64").mkdir(exist_ok=True)
    if cudart:
        (root / "lib64" / "libcudart.so").write_text("")
    return root


def _wrapper_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, toolkit: Path) -> None:
    """`nvcc` on PATH is a wrapper script in a general bin folder, not in the toolkit."""
    _script(tmp_path / "wrapbin" / "nvcc", f'exec {toolkit}/bin/nvcc "$@"\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'wrapbin'}:/usr/bin:/bin")


def test_wrapper_nvcc_resolves_to_the_real_toolkit(setup_py, monkeypatch, tmp_path) -> None:
    toolkit = _toolkit(tmp_path / "cuda-13.0")
    _wrapper_on_path(monkeypatch, tmp_path, toolkit)
    found = setup_py["find_cuda_toolkit"]()
    assert found.usable, found.reason
    assert found.root == str(toolkit.resolve())
    assert found.cudart_dir == str(toolkit.resolve() / "lib64")


def test_cuda_home_wins_over_path(setup_py, monkeypatch, tmp_path) -> None:
    on_path = _toolkit(tmp_path / "a")
    chosen = _toolkit(tmp_path / "b")
    _wrapper_on_path(monkeypatch, tmp_path, on_path)
    monkeypatch.setenv("CUDA_HOME", str(chosen))
    assert setup_py["find_cuda_toolkit"]().root == str(chosen.resolve())


def test_default_root_is_the_last_fallback(setup_py, monkeypatch, tmp_path) -> None:
    toolkit = _toolkit(tmp_path / "default")
    setup_py["DEFAULT_CUDA_ROOT"] = str(toolkit)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert setup_py["find_cuda_toolkit"]().root == str(toolkit.resolve())


def test_toolkit_without_cudart_uses_torchs_pip_runtime(setup_py, monkeypatch, tmp_path) -> None:
    toolkit = _toolkit(tmp_path / "cuda", cudart=False)
    runtime = tmp_path / "site" / "nvidia" / "cu13" / "lib"
    runtime.mkdir(parents=True)
    (runtime / "libcudart.so.13").write_text("")
    setup_py["_torch_cudart_dirs"] = lambda: [str(runtime)]
    monkeypatch.setenv("CUDA_HOME", str(toolkit))
    found = setup_py["find_cuda_toolkit"]()
    assert found.usable, found.reason
    link = Path(found.cudart_dir) / "libcudart.so"
    assert link.is_symlink() and Path(link.readlink()) == runtime / "libcudart.so.13"


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("no_header", "has no include/cuda_runtime.h"),
        ("no_cudart", "no linkable libcudart"),
        ("old_release", "the major versions must match"),
        ("cpu_torch", "CPU-only build"),
        ("no_nvcc", "no nvcc found"),
    ],
)
def test_unusable_toolkits_say_why(setup_py, monkeypatch, tmp_path, kind: str, expected: str) -> None:
    toolkit = _toolkit(tmp_path / "cuda", header=kind != "no_header", cudart=kind != "no_cudart",
                       release="12.4" if kind == "old_release" else "13.0")
    if kind == "cpu_torch":
        monkeypatch.setattr(torch.version, "cuda", None)
    if kind == "no_nvcc":
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    else:
        _wrapper_on_path(monkeypatch, tmp_path, toolkit)
    found = setup_py["find_cuda_toolkit"]()
    assert not found.usable
    assert expected in found.reason, found.reason


def test_forced_and_disabled(setup_py, monkeypatch, tmp_path, capsys) -> None:
    toolkit = _toolkit(tmp_path / "cuda", header=False)
    monkeypatch.setenv("CUDA_HOME", str(toolkit))
    assert setup_py["_cuda_decision"]() is None  # falls back, saying why
    assert "building the CPU kernels only" in capsys.readouterr().err
    monkeypatch.setenv("SHUFFLENET_CUDA", "1")
    with pytest.raises(SystemExit, match="SHUFFLENET_CUDA=1 but the CUDA kernels cannot be built"):
        setup_py["_cuda_decision"]()
    monkeypatch.setenv("SHUFFLENET_NO_CUDA", "1")
    assert setup_py["_cuda_decision"]() is None
    _toolkit(toolkit, header=True)
    monkeypatch.delenv("SHUFFLENET_NO_CUDA")
    assert setup_py["_cuda_decision"]().root == str(toolkit.resolve())


# ---- the README's quick start, as CI runs it ----------------------------------------


@pytest.fixture
def readme_commands():
    return runpy.run_path(str(REPO / ".ci" / "readme_commands.py"), run_name="readme_under_test")[
        "quick_start_commands"
    ]


def test_readme_quick_start_is_the_two_commands(readme_commands) -> None:
    setup_cmd, test_cmd = readme_commands((REPO / "README.md").read_text())
    assert setup_cmd.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install torch==")
    assert "pip install --no-build-isolation" in setup_cmd
    assert setup_cmd.endswith("python -m bench --quick")
    assert test_cmd == ". .venv/bin/activate && python -m pytest -q"


def test_readme_parser(readme_commands) -> None:
    text = "# x\n## Quick start\ntext\n```bash\n# a comment\n\necho one \\\n  two\necho three\n```\n```bash\nno\n```\n"
    assert readme_commands(text) == ["echo one two", "echo three"]
    with pytest.raises(ValueError, match="no '## Quick start' heading"):
        readme_commands("## Other\n```bash\necho\n```\n")
    with pytest.raises(ValueError, match="no ```bash block"):
        readme_commands("## Quick start\n## API\n```bash\necho\n```\n")


def test_ci_runs_the_readme_commands_with_no_environment_of_its_own() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    quick_start = ci.index(".ci/readme_commands.py README.md")
    before = ci[:quick_start]
    for var in ("CUDA_HOME", "SHUFFLENET_", "MAX_JOBS", "TRITON_"):
        assert f"export {var}" not in before, f".ci/run sets {var} before the README's commands"
    assert 'bash -c "set -eo pipefail; ${COMMANDS[$i]}"' in ci
