"""``greenbridge scope``: look inside legacy Green Button scope strings and write them canonically.

``parse`` turns a scope string (as found in ApplicationInformation, an Authorization or a token response) into
JSON with the Function Block names spelled out; ``format`` turns that JSON back into the canonical string. The
pair lets an operator check what a custodian really grants, or edit a scope safely by hand.
"""

from __future__ import annotations

import argparse
import sys

_PROG = "greenbridge scope"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "scope",
        help="parse and format legacy Green Button (ESPI) scope strings",
        description="Parse legacy Green Button (ESPI) scope strings into JSON, and format JSON back into "
        "canonical scope strings.",
    )
    actions = parser.add_subparsers(dest="scope_action", metavar="ACTION")
    actions.required = True

    parse = actions.add_parser(
        "parse",
        help="print a scope string as JSON",
        description="Print the scope as JSON (Function Blocks with their GBA names). Exit status 1 if the "
        "scope is malformed.",
    )
    parse.add_argument(
        "text", metavar="STRING", help="the scope, e.g. 'FB=4_5_15;IntervalDuration=3600'; - reads stdin"
    )
    parse.add_argument(
        "--list",
        action="store_true",
        help="the text holds several scopes (e.g. ApplicationInformation.scope); print a JSON array",
    )
    parse.set_defaults(run=run_parse)

    format_ = actions.add_parser(
        "format",
        help="print the canonical scope string for JSON",
        description="Print the canonical scope string for a scope given as JSON in the shape 'parse' prints "
        "(a JSON array gives one scope per line). Exit status 1 if the JSON or the scope is invalid.",
    )
    format_.add_argument("json", metavar="JSON", help="the scope as JSON text; - reads stdin")
    format_.add_argument(
        "--terminated",
        action="store_true",
        help="end every term with ';' as the EBNF does (default: no trailing ';', as DCs exchange scopes)",
    )
    format_.set_defaults(run=run_format)


def _read(argument: str) -> str:
    return sys.stdin.read() if argument == "-" else argument


def _fail(message: object) -> int:
    print(f"{_PROG}: {message}", file=sys.stderr)
    return 1


def run_parse(args: argparse.Namespace) -> int:
    import json

    from espi.scope import ScopeError, parse_scope, parse_scopes, scope_to_json

    text = _read(args.text)
    try:
        if args.list:
            result: object = [scope_to_json(scope) for scope in parse_scopes(text)]
        else:
            result = scope_to_json(parse_scope(text))
    except ScopeError as error:
        return _fail(error)
    print(json.dumps(result, indent=2))
    return 0


def run_format(args: argparse.Namespace) -> int:
    import json

    from espi.scope import ScopeError, format_scope, scope_from_json

    text = _read(args.json)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        return _fail(f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}")
    except RecursionError:
        return _fail("invalid JSON: nested too deeply")
    except ValueError as error:  # e.g. an integer beyond Python's digit limit
        return _fail(f"invalid JSON: {error}")
    several = isinstance(document, list)
    lines = []
    for number, obj in enumerate(document if several else [document], start=1):
        try:
            lines.append(format_scope(scope_from_json(obj), terminated=args.terminated))
        except ScopeError as error:
            return _fail(f"scope {number}: {error}" if several else error)
    for line in lines:
        print(line)
    return 0
