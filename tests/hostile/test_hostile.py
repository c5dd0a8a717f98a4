"""The hostile-input corpus: every case in cases/ and generate.py, run through the CLI.

Each case runs ``stockade`` as a subprocess (the installed console script, as a user
runs it) under ``launcher.py``, which caps its address space at 1 GB and reports its
wall time and peak RSS. The contract checked for every case (README.md):

- refused input: exit 2, stdout empty, at least one ``error: `` line;
- accepted input: exit 0, something on stdout, no ``error: `` line;
- always: stderr only ``error: ``/``warning: `` lines, each under 400 characters,
  no traceback, no raw control character (other than the newline) and no U+202E
  on stderr or stdout, done within 5 s and 300 MB; a case still running after
  10 s is killed and fails.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.hostile.generate import CASES as GENERATED
from tests.hostile.generate import GeneratedCase

HERE = Path(__file__).resolve().parent
CASES_DIR = HERE / "cases"
LAUNCHER = HERE / "launcher.py"
SIDECAR = ".expect"

MIN_CASES = 60
MAX_COMMITTED_BYTES = 20 * 1024
HARD_TIMEOUT = 10.0
TIME_LIMIT = 5.0
RSS_LIMIT = 300 * 1024 * 1024
ADDRESS_SPACE_LIMIT = 1024 * 1024 * 1024
LINE_LIMIT = 400
DEFAULT_ARGS = ("matrix", "--port", "80")
KEYS = ("expect", "error", "warning", "stdout", "args", "stdin")
_HEADER_LINE = re.compile(r"#\s*([a-z][a-z-]*):\s?(.*)")
_RAW_CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f]|\xe2\x80\xae")


# --------------------------------------------------------------------------- expectations


@dataclass(frozen=True)
class Expectation:
    """What a case expects, from its ``# key: value`` header lines."""

    exits: frozenset[int]
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    stdout: tuple[str, ...] = ()
    args: tuple[str, ...] = DEFAULT_ARGS
    stdin: bool = False


def parse_header(text: str, where: str) -> Expectation:
    """The expectation in the leading ``#`` lines of ``text`` (BOM and CRLF allowed).

    A ``# word: value`` line whose word is not a known key is refused, so that a
    misspelt ``# eror:`` cannot silently drop a check. Other comment lines describe
    the case.
    """
    values: dict[str, list[str]] = {key: [] for key in KEYS}
    for raw in text.lstrip("\ufeff").splitlines():
        line = raw.strip()
        if not line.startswith("#"):
            break
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            continue
        key, value = match.group(1), match.group(2).strip()
        if key not in KEYS:
            raise ValueError(f"{where}: unknown header key {key!r} (known: {', '.join(KEYS)})")
        if not value:
            raise ValueError(f"{where}: header {key!r} has no value")
        values[key].append(value)
    for key in ("expect", "args", "stdin"):
        if len(values[key]) > 1:
            raise ValueError(f"{where}: header {key!r} given more than once")
    if not values["expect"]:
        raise ValueError(f"{where}: no '# expect: exit=N' header")
    spec = values["expect"][0]
    if not re.fullmatch(r"exit=[02](\|[02])?", spec):
        raise ValueError(f"{where}: expect must be exit=0, exit=2 or exit=0|2, got {spec!r}")
    exits = frozenset(int(code) for code in spec.removeprefix("exit=").split("|"))
    stdin = values["stdin"][0] if values["stdin"] else "no"
    if stdin not in ("yes", "no"):
        raise ValueError(f"{where}: stdin must be yes or no, got {stdin!r}")
    return Expectation(
        exits=exits,
        errors=tuple(values["error"]),
        warnings=tuple(values["warning"]),
        stdout=tuple(values["stdout"]),
        args=tuple(shlex.split(values["args"][0])) if values["args"] else DEFAULT_ARGS,
        stdin=stdin == "yes",
    )


@dataclass(frozen=True)
class Case:
    """A committed case file, or a generated one."""

    name: str
    path: Path | None = None
    generated: GeneratedCase | None = None

    def expectation(self) -> Expectation:
        """Parsed from the sidecar ``NAME.expect``, the file's header, or the generator."""
        if self.generated is not None:
            return parse_header(self.generated.header, f"generate.py:{self.name}")
        assert self.path is not None
        sidecar = self.path.with_name(self.path.name + SIDECAR)
        source = sidecar if sidecar.exists() else self.path
        return parse_header(source.read_bytes().decode("utf-8", "replace"), source.name)


def static_cases() -> list[Case]:
    """Every committed case file (sidecars are not cases)."""
    return [
        Case(path.name, path=path)
        for path in sorted(CASES_DIR.iterdir())
        if path.is_file() and not path.name.endswith(SIDECAR)
    ]


def all_cases() -> list[Case]:
    """Committed and generated cases, committed first."""
    return static_cases() + [Case(gen.name, generated=gen) for gen in GENERATED]


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Outcome:
    """What the command did."""

    status: int | None  # None: killed after HARD_TIMEOUT
    stdout: bytes
    stderr: bytes
    seconds: float
    maxrss_bytes: int


def stockade_command() -> list[str]:
    """The installed ``stockade`` console script, next to this interpreter if possible.

    Not ``python -m stockade.cli``: the module has no ``__main__`` block, so that
    would exit 0 having done nothing.
    """
    beside = Path(sys.executable).parent / "stockade"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("stockade")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from stockade.cli import main; sys.exit(main())"]


def build_argv(args: tuple[str, ...], file_arg: str) -> list[str]:
    """``args`` with ``{file}`` replaced, or ``-f FILE`` added after the subcommand."""
    if any("{file}" in arg for arg in args):
        return [arg.replace("{file}", file_arg) for arg in args]
    return [args[0], "-f", file_arg, *args[1:]]


def run(argv: list[str], stdin: bytes | None, workdir: Path) -> Outcome:
    """Run ``stockade ARGV`` under the launcher; kill its session after HARD_TIMEOUT."""
    result = workdir / "launcher-result.json"
    result.unlink(missing_ok=True)
    env = dict(os.environ, NO_COLOR="1", LC_ALL="C.UTF-8")
    env.pop("PYTHONIOENCODING", None)
    command = [
        sys.executable,
        "-I",
        str(LAUNCHER),
        str(result),
        str(ADDRESS_SPACE_LIMIT),
        "--",
        *stockade_command(),
        *argv,
    ]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=workdir,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(stdin, timeout=HARD_TIMEOUT)
    except subprocess.TimeoutExpired:
        # The launcher leads its own session: this kills it and the command, nothing else.
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return Outcome(None, out, err, HARD_TIMEOUT, 0)
    if proc.returncode != 0 or not result.exists():
        raise AssertionError(f"launcher failed ({proc.returncode}): {err[-500:]!r}")
    report = json.loads(result.read_text(encoding="utf-8"))
    return Outcome(
        int(report["status"]), out, err, float(report["seconds"]), int(report["maxrss_kb"]) * 1024
    )


# --------------------------------------------------------------------------- checks


def _gist(stderr: str) -> str:
    """One short line that says what went wrong: a traceback's last line, else the first."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "stderr empty"
    pick = lines[-1] if "Traceback" in stderr else lines[0]
    return repr(pick[:160])


def problems_with(outcome: Outcome, expect: Expectation) -> list[str]:
    """Every way ``outcome`` breaks the contract or the case's expectation."""
    if outcome.status is None:
        return [f"still running after {HARD_TIMEOUT:.0f} s: killed"]
    stderr = outcome.stderr.decode("utf-8", "replace")
    stdout = outcome.stdout.decode("utf-8", "replace")
    problems: list[str] = []
    if outcome.status not in expect.exits:
        wanted = "|".join(str(code) for code in sorted(expect.exits))
        problems.append(f"exit {outcome.status}, expected {wanted} ({_gist(stderr)})")
    if "Traceback" in stderr or "Traceback" in stdout:
        problems.append(f"traceback: {_gist(stderr)}")
    if outcome.seconds >= TIME_LIMIT:
        problems.append(f"took {outcome.seconds:.1f} s (limit {TIME_LIMIT:.0f} s)")
    if outcome.maxrss_bytes >= RSS_LIMIT:
        problems.append(f"peak RSS {outcome.maxrss_bytes // 1024 // 1024} MB (limit 300 MB)")
    for stream, data in (("stderr", outcome.stderr), ("stdout", outcome.stdout)):
        raw = _RAW_CONTROL.search(data)
        if raw is not None:
            problems.append(f"raw control character {raw.group()!r} on {stream}")
    lines = stderr.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    errors = [line for line in lines if line.startswith("error: ")]
    warnings = [line for line in lines if line.startswith("warning: ")]
    stray = [line for line in lines if not line.startswith(("error: ", "warning: "))]
    if stray and "Traceback" not in stderr:
        problems.append(f"{len(stray)} stderr line(s) not error:/warning:, first {stray[0][:80]!r}")
    long_lines = [line for line in lines if len(line) >= LINE_LIMIT]
    if long_lines:
        longest = max(len(line) for line in long_lines)
        problems.append(
            f"{len(long_lines)} stderr line(s) of {LINE_LIMIT}+ chars (longest {longest})"
        )
    if outcome.status == 2:
        if outcome.stdout:
            problems.append(f"stdout not empty on exit 2 ({len(outcome.stdout)} bytes)")
        if not errors:
            problems.append("no 'error: ' line on exit 2")
    if outcome.status == 0:
        if not outcome.stdout.strip():
            problems.append("exit 0 with nothing on stdout")
        if errors:
            problems.append(f"'error: ' line on exit 0: {errors[0][:120]!r}")
    if outcome.status in expect.exits:
        problems += _missing("error", expect.errors, errors)
        problems += _missing("warning", expect.warnings, warnings)
        if outcome.status == 0:
            problems += [f"stdout lacks {want!r}" for want in expect.stdout if want not in stdout]
    return problems


def _missing(kind: str, wanted: tuple[str, ...], lines: list[str]) -> list[str]:
    found = [line.casefold() for line in lines]
    out = []
    for want in wanted:
        if not any(want.casefold() in line for line in found):
            seen = lines[0][:150] if lines else "none"
            out.append(f"no {kind} line contains {want!r} (first {kind}: {seen!r})")
    return out


# --------------------------------------------------------------------------- tests


CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_case(case: Case, tmp_path: Path) -> None:
    """One case: run the CLI on it and check the contract and the case's expectation."""
    expect = case.expectation()
    if case.generated is not None:
        path = tmp_path / (case.generated.filename or case.name)
        path.write_bytes(case.generated.content())
    else:
        assert case.path is not None
        path = case.path
    stdin = path.read_bytes() if expect.stdin else None
    if case.generated is not None and case.generated.argv is not None:
        argv = case.generated.argv(path)
    else:
        argv = build_argv(expect.args, "-" if expect.stdin else str(path))
    outcome = run(argv, stdin, tmp_path)
    problems = problems_with(outcome, expect)
    assert not problems, "; ".join(problems)


def test_corpus_is_large_enough() -> None:
    """At least MIN_CASES cases, ids unique, every expectation well formed."""
    names = [case.name for case in CASES]
    assert len(names) >= MIN_CASES, f"only {len(names)} hostile cases"
    assert len(set(names)) == len(names), "duplicate case names"
    for case in CASES:
        case.expectation()


def test_committed_cases_are_small_and_named() -> None:
    """Committed files stay under 20 KB; big inputs belong in generate.py."""
    for path in CASES_DIR.iterdir():
        assert path.stat().st_size < MAX_COMMITTED_BYTES, path.name
        assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", path.name), path.name
        if path.name.endswith(SIDECAR):
            case = path.with_name(path.name.removesuffix(SIDECAR))
            assert case.is_file(), f"{path.name} has no case file"


def test_header_parser_refuses_typos() -> None:
    """A misspelt key is an error, not a silently skipped check."""
    with pytest.raises(ValueError, match="unknown header key"):
        parse_header("# expect: exit=2\n# eror: spec\n", "t")
    with pytest.raises(ValueError, match="expect"):
        parse_header("# error: spec\n", "t")
    parsed = parse_header("\ufeff# expect: exit=0|2\r\n# stdin: yes\r\nkind: Pod\n", "t")
    assert parsed.exits == {0, 2}
    assert parsed.stdin
    assert build_argv(("explain", "a/b", "c/d", "--port", "80"), "F") == [
        "explain",
        "-f",
        "F",
        "a/b",
        "c/d",
        "--port",
        "80",
    ]
