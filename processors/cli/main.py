"""outbound-gate: the command line."""

from __future__ import annotations

import argparse
import sys

from processors import __version__
from processors.cli import catalog, check, demo, dlq, loadgen, notify, policy, worker
from processors.cli.common import COMMAND_ENV, env_epilog


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
    for name, command in subparsers.choices.items():
        if name in COMMAND_ENV:  # the worker's own --help lists every variable
            command.epilog = env_epilog(name)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
