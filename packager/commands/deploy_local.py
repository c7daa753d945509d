"""python -m packager deploy-local: run a greengrass-build directory here, as the Greengrass nucleus would."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from packager.commands.command import Command

DEFAULT_ROOT = Path(".packager") / "deploy-local"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "build_dir",
        nargs="?",
        type=Path,
        metavar="BUILD_DIR",
        help="a greengrass-build directory (recipes/ and artifacts/), as `build` writes it",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=DEFAULT_ROOT,
        help=f"where components are installed, run and logged, like /greengrass/v2 (default {DEFAULT_ROOT})",
    )
    parser.add_argument(
        "--update-config",
        metavar="JSON",
        help='a deployment\'s configurationUpdate for the Edge Agent, \'{"merge": {...}, "reset": ["/Key"]}\', '
        'or per component as greengrass-cli takes it, \'{"NAME": {"MERGE": {...}, "RESET": [...]}}\', '
        "or file://PATH. With a deploy-local already running in --root, it is applied to that "
        "deployment: the components whose lifecycle uses a changed value restart",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--stop", action="store_true", help="stop the deploy-local running in --root, and wait for it")
    action.add_argument("--status", action="store_true", help="print the state of each component deployed in --root")


def _configuration_updates(text: str | None) -> dict:
    from packager.errors import ValidationException

    if not text:
        return {}
    if text.startswith("file://"):
        try:
            text = Path(text[len("file://") :]).read_text()
        except OSError as exc:
            raise ValidationException(
                f"--update-config: cannot read {text[len('file://') :]}: {exc.strerror}", field="--update-config"
            ) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationException(f"--update-config is not valid JSON: {exc}", field="--update-config") from None
    from packager.greengrass.local.configuration import parse_configuration_updates

    return parse_configuration_updates(doc)


def build_options(args: argparse.Namespace):
    """Arguments -> typed DeployOptions."""
    from packager.greengrass.local.deploy import DeployOptions

    return DeployOptions(root=args.root.resolve(), configuration_updates=_configuration_updates(args.update_config))


def _print_status(root: Path) -> int:
    from packager.greengrass.local.nucleus import read_state

    state = read_state(root)
    if state is None:
        print(f"nothing has been deployed in {root}")
        return 0
    for name, c in state["components"].items():
        print(f"{name:50} {c['version']:10} {c['state']:10} {c['log']}")
    return 0


def run(args: argparse.Namespace) -> int:
    from packager.errors import ValidationException
    from packager.greengrass.local.nucleus import LocalNucleus, claim_root, request_stop, running_in, stop_orphans

    root = args.root.resolve()
    if args.status:
        return _print_status(root)
    if args.stop:
        pid = request_stop(root)
        if pid is not None:
            print(f"stopped deploy-local (pid {pid}) in {root}")
            return 0
        orphans = stop_orphans(root)
        print(
            f"no deploy-local is running in {root}"
            + (f"; stopped what one left running: {', '.join(orphans)}" if orphans else "")
        )
        return 0
    if args.update_config and running_in(root) is not None:
        return _update_running(args, root)
    if args.build_dir is None:
        raise ValidationException("give a BUILD_DIR to deploy, or --stop / --status", field="BUILD_DIR")
    from packager.greengrass.local.configuration import read_configuration, write_configuration
    from packager.greengrass.local.deploy import plan_deployment

    plan = plan_deployment(args.build_dir, build_options(args))
    pid_file = claim_root(plan.root)
    write_configuration(
        plan.root, read_configuration(plan.root)[0] + 1, {c.name: c.configuration for c in plan.components}
    )
    orphans = stop_orphans(plan.root)
    if orphans:
        print(f"stopped {', '.join(orphans)}: left running by a deploy-local that was killed", flush=True)
    stop_requested = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop_requested.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    nucleus = LocalNucleus(plan, stop_requested=stop_requested)
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: nucleus.reconfigure_requested.set())
    try:
        from packager.greengrass.local.nucleus import Interrupted

        try:
            nucleus.deploy()
        except Interrupted:
            print("interrupted: stopped every component", file=sys.stderr)
            return 130
        print(
            f"deployed {len(plan.components)} components in {plan.root}; logs in {plan.root / 'logs'}. "
            f"Stop with Ctrl-C or: python -m packager deploy-local --stop --root {plan.root}",
            flush=True,
        )
        nucleus.supervise()
        nucleus.stop()
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        pid_file.unlink(missing_ok=True)


def _update_running(args: argparse.Namespace, root: Path) -> int:
    """A configuration-only deployment to the deploy-local running in root: checked here, applied there."""
    from packager.greengrass.local.nucleus import update_running

    restarted = update_running(root, build_options(args).configuration_updates, args.build_dir)
    print(
        f"applied the configuration update in {root}; "
        + (f"restarted {', '.join(restarted)}" if restarted else "no component's lifecycle uses a changed value"),
        flush=True,
    )
    return 0


COMMAND = Command(
    name="deploy-local",
    help="run a greengrass-build directory's components here, as the Greengrass nucleus would",
    add_arguments=add_arguments,
    run=run,
)
