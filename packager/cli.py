"""Command line: argument parsing -> typed options -> library call.

Every command lives in packager/commands/ and exports a ``Command`` (packager/commands/command.py). The table
below is the one place that lists them; each module imports its heavy dependencies inside ``run`` so
``python -m packager --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from packager.commands import build, deploy_local, lookout, serve, tune, worker
from packager.commands.command import Command
from packager.errors import PackagerError


def _command_table() -> tuple[Command, ...]:
    return (build.COMMAND, tune.COMMAND, deploy_local.COMMAND, *lookout.COMMANDS, serve.COMMAND, worker.COMMAND)


def build_parser(commands: tuple[Command, ...]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m packager",
        description="Package trained anomaly models as Greengrass v2 components (an open Lookout for Vision replacement).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands:
        command_parser = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(command_parser)
        command_parser.set_defaults(_run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(_command_table())
    args = parser.parse_args(argv)
    try:
        return args._run(args)
    except PackagerError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
