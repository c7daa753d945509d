"""python -m packager deploy-local: run a greengrass-build directory here, as the Greengrass nucleus would."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from packager.cli import Command

DEFAULT_ROOT = Path(".packager") / "deploy-local"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("build_dir", nargs="?", type=Path, metavar="BUILD_DIR",
                        help="a greengrass-build directory (recipes/ and artifacts/), as `build` writes it")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                        help=f"where components are installed, run and logged, like /greengrass/v2 (default {DEFAULT_ROOT})")
    parser.add_argument("--update-config", metavar="JSON",
                        help='configuration merges, as greengrass-cli takes them: \'{"NAME": {"MERGE": {...}}}\' or file://PATH')
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--stop", action="store_true", help="stop the deploy-local running in --root, and wait for it")
    action.add_argument("--status", action="store_true", help="print the state of each component deployed in --root")


def _configuration_updates(text: str | None) -> dict:
    from packager.errors import ValidationException

    if not text:
        return {}
    if text.startswith("file://"):
        try:
            text = Path(text[len("file://"):]).read_text()
        except OSError as exc:
            raise ValidationException(f"--update-config: cannot read {text[len('file://'):]}: {exc.strerror}",
                                      field="--update-config") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationException(f"--update-config is not valid JSON: {exc}", field="--update-config") from None
    if not isinstance(doc, dict) or not all(isinstance(v, dict) and set(v) <= {"MERGE"} and isinstance(v.get("MERGE", {}), dict)
                                            for v in doc.values()):
        raise ValidationException('--update-config must look like {"ComponentName": {"MERGE": {...}}}', field="--update-config")
    return doc


def build_options(args: argparse.Namespace):
    """Arguments -> typed DeployOptions."""
    from packager.deploy_local import DeployOptions

    return DeployOptions(root=args.root.resolve(), configuration_updates=_configuration_updates(args.update_config))


def _print_status(root: Path) -> int:
    from packager.local_nucleus import read_state

    state = read_state(root)
    if state is None:
        print(f"nothing has been deployed in {root}")
        return 0
    for name, c in state["components"].items():
        print(f"{name:50} {c['version']:10} {c['state']:10} {c['log']}")
    return 0


def run(args: argparse.Namespace) -> int:
    from packager.errors import ValidationException
    from packager.local_nucleus import LocalNucleus, claim_root, request_stop, stop_orphans

    root = args.root.resolve()
    if args.status:
        return _print_status(root)
    if args.stop:
        pid = request_stop(root)
        if pid is not None:
            print(f"stopped deploy-local (pid {pid}) in {root}")
            return 0
        orphans = stop_orphans(root)
        print(f"no deploy-local is running in {root}" + (f"; stopped what one left running: {', '.join(orphans)}" if orphans else ""))
        return 0
    if args.build_dir is None:
        raise ValidationException("give a BUILD_DIR to deploy, or --stop / --status", field="BUILD_DIR")
    from packager.deploy_local import plan_deployment

    plan = plan_deployment(args.build_dir, build_options(args))
    pid_file = claim_root(plan.root)
    orphans = stop_orphans(plan.root)
    if orphans:
        print(f"stopped {', '.join(orphans)}: left running by a deploy-local that was killed", flush=True)
    stop_requested = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop_requested.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    nucleus = LocalNucleus(plan, stop_requested=stop_requested)
    try:
        from packager.local_nucleus import Interrupted

        try:
            nucleus.deploy()
        except Interrupted:
            print("interrupted: stopped every component", file=sys.stderr)
            return 130
        print(f"deployed {len(plan.components)} components in {plan.root}; logs in {plan.root / 'logs'}. "
              f"Stop with Ctrl-C or: python -m packager deploy-local --stop --root {plan.root}", flush=True)
        nucleus.supervise()
        nucleus.stop()
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        pid_file.unlink(missing_ok=True)


COMMAND = Command(name="deploy-local", help="run a greengrass-build directory's components here, as the Greengrass nucleus would",
                  add_arguments=add_arguments, run=run)
