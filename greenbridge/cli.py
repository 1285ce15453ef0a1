"""The ``greenbridge`` command line.

Each subcommand lives in ``greenbridge.commands.<name>`` with ``register(subparsers)``; heavy imports happen
inside the command's ``run`` so that ``greenbridge --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from greenbridge import __version__, commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="greenbridge",
        description="CDS gateway in front of legacy Green Button (ESPI) Connect My Data systems.",
    )
    parser.add_argument("--version", action="version", version=f"greenbridge {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"greenbridge.commands.{module.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); nothing more to say.
        return 0
