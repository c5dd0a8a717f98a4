"""``stockade convert``: another system's network policy as stockade's.

``stockade convert rancher-network -f NETWORK.json`` reads a Rancher 1.6
environment's network object (JSON, ``-`` for stdin) and prints the equivalent
IsolationPolicy as YAML (:mod:`stockade.rancher` has the mapping), ready for
``kubectl apply -f -`` or ``stockade matrix -f -``. What the conversion leaves out
goes to stderr as warnings and into the YAML as comments. Invalid input: one line
per problem on stderr, nothing on stdout, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from stockade.inputs import read_or_report
from stockade.rancher import (
    DEFAULT_NAME,
    DEFAULT_PRIORITY,
    DEFAULT_SERVICE_LABEL,
    RancherConversionError,
    convert_bytes,
    option_problems,
    to_yaml,
)
from stockade.safetext import printable, short

EXIT_OK = 0
EXIT_USAGE = 2


def _option_type(option: str, **fixed: Any) -> Callable[[str], Any]:
    """argparse type for a conversion option, checked by
    :func:`stockade.rancher.option_problems` (the other options ``fixed``)."""

    def check(text: str) -> Any:
        value: Any = text
        if option == "priority":
            try:
                value = int(text, 10)
            except ValueError:
                raise argparse.ArgumentTypeError(f"must be a number, got {short(text)}") from None
        problems = option_problems(**{**fixed, option: value})
        if problems:
            raise argparse.ArgumentTypeError("; ".join(p.message for p in problems))
        return value

    return check


def add_parser(sub: Any) -> None:
    """The ``convert`` command and its ``rancher-network`` subcommand."""
    convert = sub.add_parser(
        "convert",
        help="convert another system's network policy to stockade's",
        description="Print the equivalent of another system's network policy as YAML, "
        "ready for kubectl apply -f - or stockade matrix -f.",
        allow_abbrev=False,
    )
    kinds = convert.add_subparsers(dest="source_kind", required=True, metavar="KIND")
    rancher = kinds.add_parser(
        "rancher-network",
        help="a Rancher 1.6 environment network policy (JSON) to an IsolationPolicy",
        description="Convert a Rancher 1.6 environment's network object (JSON: "
        "defaultPolicyAction and the ordered policy rules) to one IsolationPolicy, "
        "printed as YAML. See docs/cli.md for the mapping.",
        allow_abbrev=False,
    )
    rancher.add_argument(
        "-f",
        "--filename",
        dest="file",
        required=True,
        metavar="NETWORK.json",
        help="the network object as JSON, - for stdin",
    )
    rancher.add_argument(
        "--stack-label",
        type=_option_type("stack_label", service_label=None),
        default=None,
        metavar="KEY",
        help="pod label naming the stack (default: a stack is a namespace)",
    )
    rancher.add_argument(
        "--service-label",
        type=_option_type("service_label"),
        default=DEFAULT_SERVICE_LABEL,
        metavar="KEY",
        help=f"pod label naming the service (default: {DEFAULT_SERVICE_LABEL})",
    )
    rancher.add_argument(
        "--name",
        type=_option_type("name"),
        default=DEFAULT_NAME,
        help=f"the IsolationPolicy's name (default: {DEFAULT_NAME})",
    )
    rancher.add_argument(
        "--priority",
        type=_option_type("priority"),
        default=DEFAULT_PRIORITY,
        metavar="N",
        help=f"its Admin tier priority, 0-1000 (default: {DEFAULT_PRIORITY})",
    )


def run_convert(args: argparse.Namespace) -> tuple[str | None, list[str], list[str]]:
    """``convert rancher-network``: the YAML (None on errors), errors, warnings."""
    errors: list[str] = []
    data = read_or_report(args.file, errors)
    if data is None:
        return None, errors, []
    try:
        conversion = convert_bytes(
            data,
            args.file,
            name=args.name,
            priority=args.priority,
            stack_label=args.stack_label,
            service_label=args.service_label,
        )
    except RancherConversionError as exc:
        return None, exc.lines(), []
    return to_yaml(conversion), [], list(conversion.warnings)


def main(args: argparse.Namespace) -> int:
    """Run ``stockade convert ...``; the exit code."""
    text, errors, warnings = run_convert(args)
    if text is None:
        for line in errors:
            print(f"error: {printable(line)}", file=sys.stderr)
        return EXIT_USAGE
    for line in warnings:
        print(f"warning: {printable(line)}", file=sys.stderr)
    sys.stdout.write(text)
    sys.stdout.flush()
    return EXIT_OK
