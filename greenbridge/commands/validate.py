"""``greenbridge validate``: check Green Button XML files against the official ESPI 4.0 schemas.

One line per problem on stdout in the ``FILE:LINE: message (path)`` form editors and CI logs link to, and one
summary line per file on stderr, so ``greenbridge validate *.xml > problems.txt`` keeps the two apart. Exit
status: 0 when every file is valid, 1 when any is not, 2 for usage errors or a file that cannot be read.
"""

from __future__ import annotations

import argparse
import sys

from greenbridge import progress

_DEFAULT_MAX_ERRORS = 100


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="validate Green Button (ESPI) XML files against the official schemas",
        description=(
            "Validate Green Button XML (Atom feeds or entries, or bare ESPI resources such as BatchList) "
            "against the NAESB ESPI 4.0 schemas, without network access. By default the Atom link/@type "
            "attribute, which most real files omit, is optional; --strict requires it as the current Green "
            "Button Alliance Atom schema does."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="XML file to check ('-' reads stdin)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="use the newest GBA Atom schema, in which every atom:link needs a type attribute",
    )
    parser.add_argument(
        "--max-errors",
        type=_max_errors,
        default=_DEFAULT_MAX_ERRORS,
        metavar="N",
        help=f"stop reporting a file after N problems (default {_DEFAULT_MAX_ERRORS}; 0 = no limit)",
    )
    progress.add_arguments(parser)
    parser.set_defaults(run=run)


def _max_errors(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (no limit) or more")
    return value


def run(args: argparse.Namespace) -> int:
    import gc

    from espi.validation import load_schema

    load_schema(strict=args.strict)
    # The schema set (tens of thousands of objects) outlives every file; keeping it, and whatever else exists
    # now, out of the cyclic collector's full passes makes large files validate about a fifth faster. Undone
    # on the way out, so calling run() in-process (tests) leaves the collector as it was.
    gc.freeze()
    try:
        return _validate_all(args)
    finally:
        gc.unfreeze()


def _validate_all(args: argparse.Namespace) -> int:
    from espi.validation import validate

    limit = args.max_errors or None
    status = 0
    # Bytes of all files with their rate and ETA, and how many files are invalid (terminal only).
    with progress.Progress(progress.wanted(args), total=progress.file_sizes(args.files), desc="validate") as bar:
        for path in args.files:
            label = "<stdin>" if path == "-" else path
            source = sys.stdin.buffer if path == "-" else path
            try:
                report = validate(source, strict=args.strict, name=label, max_errors=limit, on_read=bar.advance)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                bar.write(f"{label}: cannot read: {reason}")
                status = 2
                continue
            for issue in report.errors:
                bar.write(str(issue), sys.stdout)
            sys.stdout.flush()  # keep the summary after its file's problems when both streams share a terminal
            bar.write(str(report))  # "F: valid (lenient)", "F: 3 errors (strict)", "F: 100+ errors (…)"
            bar.count("files", 1)
            if not report.valid:
                bar.count("invalid", 1)
                status = max(status, 1)
    return status
