"""outbound-gate: the command line."""

from __future__ import annotations

import argparse
import sys

from processors import __version__
from processors.cli import catalog, check, demo, dlq, loadgen, notify, policy, worker


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="outbound-gate",
        description="Stop WhatsApp messages Meta would refuse, before they are sent.",
    )
    root.add_argument("--version", action="version", version=f"outbound-gate {__version__}")
    subparsers = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check.add_parser(subparsers)
    worker.add_parser(subparsers)
    demo.add_parser(subparsers)
    policy.add_parser(subparsers)
    catalog.add_parser(subparsers)
    loadgen.add_parser(subparsers)
    dlq.add_parser(subparsers)
    notify.add_parser(subparsers)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
