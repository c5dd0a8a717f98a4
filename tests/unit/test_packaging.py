"""Packaging: the wheel holds one import package, and `operator` stays the stdlib's."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("stockade-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_maps_operator_and_agent_into_the_stockade_package(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    packages = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert packages == {"stockade"}, "only the stockade package is installed, no `operator`"
    for source in (ROOT / "agent").glob("*.py"):
        assert f"stockade/agent/{source.name}" in names
    for source in (ROOT / "operator").glob("*.py"):
        assert f"stockade/controller/{source.name}" in names
    assert "stockade/py.typed" in names


def test_console_scripts_match_pyproject(wheel: zipfile.ZipFile) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    text = wheel.read(entry_points).decode()
    for name, target in scripts.items():
        assert f"{name} = {target}" in text


def test_operator_from_the_repository_root_is_the_standard_library() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import operator; operator.add; print(operator.__file__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(ROOT) not in proc.stdout
    assert not (ROOT / "operator" / "__init__.py").exists()
