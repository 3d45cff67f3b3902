"""Command line: ``morphst demo`` (or ``python -m morphst demo``)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``morphst`` command."""
    parser = argparse.ArgumentParser(prog="morphst", description="morphst command line")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the main job on the real HER2ST patient C data")
    demo.add_argument("--data-dir", default=None, help="folder with her2st_patientC (default: $MORPHST_DATA_DIR)")
    demo.add_argument("--out", default="morphst_output", help="output folder (default: ./morphst_output)")
    demo.add_argument("--sections", default="C2,C3,C4,C5,C6", help="comma-separated sections (default: C2..C6)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        run_demo(data_dir=args.data_dir, out=args.out, sections=tuple(args.sections.split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
