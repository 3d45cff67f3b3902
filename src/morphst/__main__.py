"""Command line: ``morphst demo`` (or ``python -m morphst demo``), ``morphst --version``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: Exceptions that morphst raises for bad user input (wrong section, missing data, wrong argument type).
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, TypeError)
_PACKAGE_DIR = Path(__file__).resolve().parent


def _raised_by_morphst(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by morphst's own code (the innermost frame is in the package), not by a library."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    try:
        return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE_DIR)
    except (OSError, ValueError):
        return False


#: Python keywords in morphst's messages and the command-line options that set the same thing.
_OPTION_NAMES = (
    ("`data_dir=`", "`--data-dir`"),
    ("data_dir='", "--data-dir='"),
    (" (or `mst.settings.data_dir`)", ""),
    ("no data_dir,", "no --data-dir,"),
)


def _message(exc: BaseException) -> str:
    # a KeyError's str() is the repr of its argument; show the message itself
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]
    else:
        text = str(exc)
    for python, option in _OPTION_NAMES:
        text = text.replace(python, option)
    return text


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="morphst", description="morphst command line")
    parser.add_argument("--version", action="version", version=f"morphst {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the main job on the real HER2ST patient C data")
    demo.add_argument("--data-dir", default=None, help="folder with her2st_patientC (default: $MORPHST_DATA_DIR)")
    demo.add_argument("--out", default="morphst_output", help="output folder (default: ./morphst_output)")
    demo.add_argument(
        "--library-id",
        "--sections",
        dest="library_id",
        default="C2,C3,C4,C5,C6",
        help="comma-separated sections, as `library_id` of mst.datasets.her2st (default: C2,C3,C4,C5,C6); "
        "--sections is the same option",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``morphst`` command.

    Returns the exit code: 0 on success, 2 on a user error that morphst reports (bad section, missing data, ...),
    printed as ``morphst: error: <message>`` on stderr. Unexpected exceptions keep their traceback.
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from ._demo import run_demo

            sections = tuple(s.strip() for s in args.library_id.split(",") if s.strip())
            run_demo(data_dir=args.data_dir, out=args.out, library_id=sections)
    except USER_ERRORS as e:
        if not _raised_by_morphst(e):
            raise
        print(f"morphst: error: {_message(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
