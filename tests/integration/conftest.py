"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from stockade_lab.emulator import EmulatorThread

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[EmulatorThread]:
    """The API server emulator with stockade's CRDs, its kubeconfig in ``tmp_path``.

    Modules that need another set-up define their own ``emu``, which takes precedence.
    """
    thread = EmulatorThread()
    thread.start()
    for crd in yaml.safe_load_all((ROOT / "manifests/crds.yaml").read_text()):
        thread.emulator.put_object(crd)
    thread.write_kubeconfig(tmp_path / "kubeconfig")
    try:
        yield thread
    finally:
        thread.stop()
