"""``stockade convert``: other platforms' network policy as stockade objects.

``stockade convert rancher-network -f NETWORK.json`` reads a Rancher 1.6
environment's network object (JSON, ``-`` for stdin) and prints the equivalent
IsolationPolicy as YAML on stdout, ready for ``kubectl apply -f -`` or
``stockade matrix -f``. What the conversion leaves out, or could not say, goes to
stderr and into the YAML as comments. Invalid input: one line per problem on
stderr, nothing on stdout, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from stockade.inputs import read_input
from stockade.rancher import (
    DEFAULT_NAME,
    DEFAULT_PRIORITY,
    DEFAULT_SERVICE_LABEL,
    ConversionError,
    Options,
    convert,
)
from stockade.safetext import printable
from stockade.yamlload import MAX_INPUT_BYTES

EXIT_OK = 0
EXIT_USAGE = 2
MIB = 1024 * 1024


class InputError(Exception):
    """The input could not be read as JSON."""


def add_parser(sub: Any) -> None:
    """The ``convert`` command and its ``rancher-network`` subcommand."""
    convert_p = sub.add_parser(
        "convert",
        help="convert another platform's network policy into stockade objects",
        description="Convert another platform's network policy into stockade objects.",
        allow_abbrev=False,
    )
    kinds = convert_p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    rancher = kinds.add_parser(
        "rancher-network",
        help="a Rancher 1.6 environment's network policy, as an IsolationPolicy",
        description="Read a Rancher 1.6 environment's network object (JSON: "
        "defaultPolicyAction and the ordered policy rules) and print the equivalent "
        "IsolationPolicy as YAML.",
        allow_abbrev=False,
    )
    rancher.add_argument(
        "-f",
        "--filename",
        required=True,
        metavar="FILE",
        help="the network object (JSON; - for stdin)",
    )
    rancher.add_argument(
        "--stack-label",
        metavar="KEY",
        help="a pod label naming the stack (default: a stack is a namespace)",
    )
    rancher.add_argument(
        "--service-label",
        metavar="KEY",
        default=DEFAULT_SERVICE_LABEL,
        help=f"the pod label naming the service (default: {DEFAULT_SERVICE_LABEL})",
    )
    rancher.add_argument("--name", default=DEFAULT_NAME, help=f"default: {DEFAULT_NAME}")
    rancher.add_argument(
        "--priority",
        type=int,
        default=DEFAULT_PRIORITY,
        help=f"Admin tier priority (default {DEFAULT_PRIORITY})",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``stockade convert ...``; the exit code."""
    options = Options(
        name=args.name,
        priority=args.priority,
        stack_label=args.stack_label,
        service_label=args.service_label,
    )
    try:
        network = read_json(args.filename)
        result = convert(network, options)
    except InputError as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except ConversionError as exc:
        for line in exc.lines():
            print(f"error: {args.filename}: {printable(line)}", file=sys.stderr)
        return EXIT_USAGE
    for note in result.notes:
        print(f"warning: {printable(note)}", file=sys.stderr)
    sys.stdout.write(to_yaml(result.policy, result.notes))
    sys.stdout.flush()
    return EXIT_OK


def to_yaml(policy: dict[str, Any], notes: tuple[str, ...]) -> str:
    """The policy as a YAML document, the notes as comments above it."""
    header = "# Converted from a Rancher 1.6 environment network policy by stockade.\n"
    header += "".join(f"# note: {printable(n)}\n" for n in notes)
    return header + yaml.safe_dump(policy, sort_keys=False)


def read_json(path: str) -> Any:
    """The JSON value of ``path`` (``-``: stdin), within the CLI's input size limit."""
    try:
        data = read_input(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"{path}: larger than {MAX_INPUT_BYTES // MIB} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InputError(f"{path}: nested too deeply") from None
