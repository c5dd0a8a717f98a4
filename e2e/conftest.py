"""The cluster driver the end-to-end scenarios run against.

Chosen by ``--e2e-driver`` or the environment variable ``STOCKADE_E2E_DRIVER``:

- ``engine`` (the default): offline, stockade's compiled rule sets judged by the
  dataplane model; a few seconds, no privileges.
- ``sandbox``: a whole cluster on this machine with real packets; needs root and
  :mod:`stockade_lab.sandbox`, and the adapter ``e2e/sandbox_driver.py`` with
  ``make_driver() -> ClusterDriver``. Every test is marked ``root``; as non-root they
  skip (or fail, with ``STOCKADE_REQUIRE_ROOT=1``).
- ``kind``: a kind cluster with stockade installed; the adapter
  ``e2e/kind_driver.py`` with ``make_driver() -> ClusterDriver``.

One driver serves the whole session (a cluster is slow to build); each test starts
from :meth:`ClusterDriver.reset`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.driver import ClusterDriver, EngineDriver

DRIVERS = ("engine", "sandbox", "kind")
_HERE = Path(__file__).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--e2e-driver``."""
    parser.addoption(
        "--e2e-driver",
        choices=DRIVERS,
        default=None,
        help="cluster driver for e2e/ (default: $STOCKADE_E2E_DRIVER or engine)",
    )


def driver_name(config: pytest.Config) -> str:
    """The chosen driver's name."""
    chosen = config.getoption("--e2e-driver", default=None) or os.environ.get(
        "STOCKADE_E2E_DRIVER", "engine"
    )
    if chosen not in DRIVERS:
        raise pytest.UsageError(f"STOCKADE_E2E_DRIVER must be one of {DRIVERS}, got {chosen!r}")
    return str(chosen)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With the sandbox driver, every e2e test needs root."""
    if driver_name(config) != "sandbox":
        return
    required = os.environ.get("STOCKADE_REQUIRE_ROOT") == "1"
    for item in items:
        if _HERE not in Path(str(item.path)).parents:
            continue
        item.add_marker(pytest.mark.root)
        if os.geteuid() != 0 and not required:
            item.add_marker(pytest.mark.skip(reason="the sandbox driver needs root"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A root-only test without root fails, before any fixture, when root is required.

    Not ``xfail(run=False)``: that reports XFAIL and exits 0, so a missing
    capability would pass quietly.
    """
    required = os.environ.get("STOCKADE_REQUIRE_ROOT") == "1"
    if required and os.geteuid() != 0 and "root" in item.keywords:
        pytest.fail("the sandbox driver needs root, and STOCKADE_REQUIRE_ROOT=1 forbids skipping")


def _adapter(module: str, what: str) -> ClusterDriver:
    try:
        factory = importlib.import_module(module).make_driver
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{what}: no {module}.make_driver() ({exc})", pytrace=False)
    driver: ClusterDriver = factory()
    return driver


def _make(name: str) -> ClusterDriver:
    if name == "engine":
        return EngineDriver()
    if name == "sandbox":
        try:
            importlib.import_module("stockade_lab.sandbox")
        except ImportError as exc:
            pytest.fail(f"the sandbox driver needs stockade_lab.sandbox ({exc})", pytrace=False)
        return _adapter("e2e.sandbox_driver", "the sandbox driver")
    return _adapter("e2e.kind_driver", "the kind driver")


@pytest.fixture(scope="session")
def cluster_driver(pytestconfig: pytest.Config) -> Iterator[ClusterDriver]:
    """The session's driver, closed at the end."""
    driver = _make(driver_name(pytestconfig))
    try:
        yield driver
    finally:
        driver.close()


@pytest.fixture
def driver(cluster_driver: ClusterDriver) -> ClusterDriver:
    """The driver, reset to the model."""
    cluster_driver.reset()
    return cluster_driver
