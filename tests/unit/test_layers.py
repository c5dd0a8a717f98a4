"""Every module of the product has a layer, and the layer contracts cover it.

`lint-imports` (run by the test command) checks the contracts in pyproject.toml; this
test checks the contracts themselves: a new top-level module must be placed in a
layer (a contract's sources, or one of the program and lab lists here), so it cannot
slip past every contract unnoticed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from stockade.cli import EXTENSION_GROUP, run_extension
from stockade.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "stockade"

# Modules no purity contract constrains: the programs (I/O by design). The lab is a
# package of its own (lab/stockade_lab), which the product may not import at all.
PROGRAMS = {
    "stockade.cli",
    "stockade.convert_cli",
    "stockade.inputs",
    "stockade.output",
    "stockade.plugin",
    "stockade.kube",
}
LAB = {"stockade_lab"}
COMPONENTS = {"stockade.agent", "stockade.controller"}


def _contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts: list[dict[str, Any]] = config["contracts"]
    return contracts


def _top_level_modules() -> set[str]:
    names = {f"stockade.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    names |= {f"stockade.{p.name}" for p in PACKAGE.iterdir() if p.is_dir() and p.name[0] != "_"}
    return names


def test_every_module_has_a_layer() -> None:
    pure = {m for c in _contracts() if c["type"] == "forbidden" for m in c["source_modules"]}
    placed = {m for m in pure if m.count(".") == 1} | PROGRAMS | COMPONENTS
    unplaced = _top_level_modules() - placed
    assert not unplaced, f"modules in no layer (add them to a contract): {sorted(unplaced)}"


def test_the_contracts_name_what_exists() -> None:
    existing = _top_level_modules()
    named = {
        m
        for c in _contracts()
        for key in ("source_modules", "forbidden_modules", "modules")
        for m in c.get(key, ())
        if m.startswith("stockade.") and m.count(".") == 1
    }
    assert named <= existing, f"contracts name modules that do not exist: {named - existing}"


def test_the_lab_is_forbidden_to_the_product() -> None:
    (lab_contract,) = [c for c in _contracts() if set(c.get("forbidden_modules", ())) == LAB]
    assert {"stockade.agent", "stockade.controller", "stockade.cli"} <= set(
        lab_contract["source_modules"]
    )


def test_the_lab_is_not_in_the_product_package() -> None:
    """The lab lives in lab/ (its own distribution), so the wheel and image lack it."""
    assert not [p for p in PACKAGE.iterdir() if p.name in {"emulator", "sandbox"}]
    assert not [p for p in PACKAGE.glob("*.py") if p.stem in {"netlab", "reference"}]
    assert (ROOT / "lab" / "stockade_lab" / "__init__.py").is_file()


def test_a_missing_extension_command_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert EXTENSION_GROUP == "stockade.commands"
    assert run_extension("no-such-command", []) == 2
    assert "the no-such-command command is not installed" in capsys.readouterr().err


def test_the_sandbox_command_is_found_by_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    """`stockade sandbox` (the README's demo command) reaches the lab's CLI."""
    try:
        code = cli_main(["sandbox", "--help"])
    except SystemExit as exc:  # argparse's --help exits
        code = exc.code if isinstance(exc.code, int) else 2
    assert code == 0
    assert "usage: stockade sandbox" in capsys.readouterr().out
