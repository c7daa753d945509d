"""Run a DeploymentPlan's lifecycles as the Greengrass nucleus does, and report each component's state.

Install and Startup run to completion within their timeouts (120 s unless the recipe says otherwise); a failure
stops the deployment. Run processes are watched: exit 0 is FINISHED, anything else ERRORED, Recover runs and Run
restarts, and the third error is BROKEN. Stopping runs each Shutdown step and ends each Run process group, dependents first.
Every step runs as `sh -c SCRIPT` in the component's work directory, its output appended to logs/<name>.log.
Bootstrap runs before Install, once per component version in a root, as the nucleus runs it once per deployment of a
new version: exit 100 (restart the nucleus) goes on, since there is no nucleus here to restart; exit 101 (reboot
the device) stops the deployment and asks for the reboot, after which the next deploy-local goes on from Install.
Steps run as the user who started deploy-local: a step with RequiresPrivilege says so in the log when that is not root.
A deploy-local that was killed outright (SIGKILL) cannot stop its components; the state file names their process
groups, so `deploy-local --stop` or the next deploy-local in the same root ends them.
A configuration-only deployment to a running deploy-local (update_running) is checked by the caller, written to the
root's configuration.json, and applied on SIGHUP: as the nucleus does, a component whose lifecycle, once its
variables are filled in, changed is restarted (its Run process ended and started again); the others keep running.
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from packager.errors import ConflictException, InternalServerException, PackagerError
from packager.greengrass.local.configuration import read_configuration, write_configuration
from packager.greengrass.local.deploy import (
    DeploymentPlan,
    DeployOptions,
    LocalComponent,
    environment,
    interpolate,
    plan_deployment,
    prepare_component,
)
from packager.greengrass.recipe import recipe_key
from packager.processes import process_start_time

DEFAULT_TIMEOUTS = {"bootstrap": 120, "install": 120, "startup": 120, "shutdown": 15, "recover": 60}
BOOTSTRAP_RESTART, BOOTSTRAP_REBOOT = 100, 101  # what a Bootstrap step's exit code asks of the nucleus
MAX_RUN_ERRORS = 3  # the nucleus marks a component BROKEN after its third error
STOP_GRACE_SECONDS = 10
PID_FILE = "deploy-local.pid"
STATE_FILE = "state.json"
BOOTSTRAPPED_FILE = "bootstrapped.json"  # component -> the version whose Bootstrap step completed in this root


class State(str, enum.Enum):
    NEW = "NEW"
    INSTALLED = "INSTALLED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    ERRORED = "ERRORED"
    BROKEN = "BROKEN"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"  # deploy-local's own: stopped on request


class StepFailed(InternalServerException):
    """A lifecycle step failed or timed out; the message names the component, the step and its log."""


class Interrupted(Exception):
    pass


@dataclass
class Tracked:
    component: LocalComponent
    state: State = State.NEW
    process: subprocess.Popen | None = None
    started: float = 0.0
    run_timeout: float | None = None
    errors: int = 0


def _step(component: LocalComponent, name: str) -> dict | None:
    step = recipe_key(component.lifecycle, name)
    if step is None:
        return None
    return {"Script": step} if isinstance(step, str) else step


def _end_group(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM the step's whole process group, then SIGKILL what is left after the grace period."""
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class LocalNucleus:
    def __init__(self, plan: DeploymentPlan, out: TextIO = sys.stdout, stop_requested: threading.Event | None = None):
        self.plan = plan
        self.out = out
        self.stop_requested = stop_requested or threading.Event()
        self.reconfigure_requested = threading.Event()  # set on SIGHUP: configuration.json has an update
        self.tracked = [Tracked(c) for c in plan.components]
        self.configuration_generation, _ = read_configuration(plan.root)
        self.configuration_result: dict = {}  # what the last update did: restarted components, or its error

    # -- reporting -------------------------------------------------------------------------------------------
    def _set(self, t: Tracked, state: State, note: str = "") -> None:
        t.state = state
        print(
            f"{t.component.name} {t.component.version}: {state.value}{f' ({note})' if note else ''}",
            file=self.out,
            flush=True,
        )
        self._write_state()

    def _write_state(self) -> None:
        doc = {
            "pid": os.getpid(),
            "build_dir": str(self.plan.build_dir),
            "root": str(self.plan.root),
            "components": {
                t.component.name: {
                    "version": t.component.version,
                    "state": t.state.value,
                    **_run_group(t.process),
                    "log": str(self.plan.log_path(t.component)),
                }
                for t in self.tracked
            },
            "configuration_generation": self.configuration_generation,
            "configuration_result": self.configuration_result,
        }
        _write_state(self.plan.root, doc)

    def _log(self, t: Tracked, line: str) -> None:
        with open(self.plan.log_path(t.component), "a") as log:
            log.write(f"[deploy-local {time.strftime('%H:%M:%S')}] {line}\n")

    # -- steps ---------------------------------------------------------------------------------------------
    def _skip(self, t: Tracked, step: dict) -> bool:
        condition = str(recipe_key(step, "SkipIf", "")).split(None, 1)
        if len(condition) != 2:
            return False
        kind, arg = condition[0].lower(), interpolate(condition[1], self.plan, t.component)
        return shutil.which(arg) is not None if kind == "onpath" else Path(arg).exists() if kind == "exists" else False

    def _spawn(self, t: Tracked, name: str, step: dict) -> subprocess.Popen:
        script = interpolate(str(recipe_key(step, "Script", "")), self.plan, t.component)
        env = environment(self.plan, t.component, step)
        if str(recipe_key(step, "RequiresPrivilege", False)).lower() == "true" and os.geteuid() != 0:
            self._log(
                t,
                f"{name} has RequiresPrivilege, which the nucleus runs as root; deploy-local runs it as uid {os.geteuid()}",
            )
        self._log(t, f"{name}: {script}")
        with open(self.plan.log_path(t.component), "ab") as log:
            return subprocess.Popen(
                ["sh", "-c", script],
                cwd=self.plan.work_path(t.component),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _run_to_end(self, t: Tracked, name: str, required: bool = True, accept: tuple[int, ...] = (0,)) -> int | None:
        """Run a blocking step and return its exit code; None when the recipe has none (or SkipIf says so).

        Exit codes in accept succeed; a step that is not required never fails the deployment."""
        step = _step(t.component, name)
        if step is None or self._skip(t, step):
            return None
        timeout = float(recipe_key(step, "Timeout", DEFAULT_TIMEOUTS[name]))
        process = self._spawn(t, name, step)
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            if self.stop_requested.is_set() and required:
                _end_group(process, 2)
                raise Interrupted()
            if time.monotonic() > deadline:
                _end_group(process, 2)
                self._log(t, f"{name} timed out after {timeout:g} s")
                if required:
                    raise StepFailed(
                        f"{t.component.name}: {name} timed out after {timeout:g} s; see {self.plan.log_path(t.component)}"
                    )
                return process.returncode
            time.sleep(0.05)
        self._log(t, f"{name} exited with {process.returncode}")
        if process.returncode not in accept and required:
            raise StepFailed(
                f"{t.component.name}: {name} failed with exit code {process.returncode}; "
                f"see {self.plan.log_path(t.component)}"
            )
        return process.returncode

    def _start_run(self, t: Tracked, step: dict) -> None:
        t.process, t.started = self._spawn(t, "run", step), time.monotonic()
        timeout = recipe_key(step, "Timeout")
        t.run_timeout = float(timeout) if timeout is not None else None
        self._set(t, State.RUNNING)

    # -- deployment ----------------------------------------------------------------------------------------
    def deploy(self) -> None:
        """Prepare, install and start every component, dependencies first. On failure, stop what started, then raise."""
        try:
            for t in self.tracked:
                if self.stop_requested.is_set():
                    raise Interrupted()
                prepare_component(self.plan, t.component)
                self._log(t, f"deploying {t.component.name} {t.component.version} from {t.component.recipe_path}")
                self._bootstrap(t)
                self._run_to_end(t, "install")
                self._set(t, State.INSTALLED)
                if self._run_to_end(t, "startup") is not None:
                    self._set(t, State.RUNNING)
                elif (run := _step(t.component, "run")) is not None and not self._skip(t, run):
                    self._start_run(t, run)
                else:
                    self._set(t, State.FINISHED)
        except BaseException:
            self.stop()
            raise

    def _bootstrap(self, t: Tracked) -> None:
        """The Bootstrap step, once per component version in this root; see the module's docstring for 100 and 101."""
        done_path = self.plan.root / BOOTSTRAPPED_FILE
        done = json.loads(done_path.read_text()) if done_path.exists() else {}
        if done.get(t.component.name) == t.component.version:
            return
        code = self._run_to_end(t, "bootstrap", accept=(0, BOOTSTRAP_RESTART, BOOTSTRAP_REBOOT))
        if code is None:
            return
        done[t.component.name] = t.component.version
        done_path.write_text(json.dumps(done, indent=1, sort_keys=True) + "\n")
        if code == BOOTSTRAP_RESTART:
            self._log(
                t, "bootstrap asked for a nucleus restart (exit 100): deploy-local has none to restart, and goes on"
            )
        elif code == BOOTSTRAP_REBOOT:
            raise StepFailed(
                f"{t.component.name}: its Bootstrap step asks for a device reboot (exit 101). Reboot, then "
                f"run deploy-local again: it goes on from Install. See {self.plan.log_path(t.component)}"
            )

    def supervise(self) -> None:
        """Watch Run processes until a stop is requested: record exits, restart errors, mark BROKEN at the limit."""
        while not self.stop_requested.wait(0.2):
            if self.reconfigure_requested.is_set():
                self.reconfigure_requested.clear()
                self.reconfigure()
            for t in self.tracked:
                if t.process is None:
                    continue
                if (
                    t.run_timeout is not None
                    and t.process.poll() is None
                    and time.monotonic() - t.started > t.run_timeout
                ):
                    self._log(t, f"run timed out after {t.run_timeout:g} s")
                    _end_group(t.process, STOP_GRACE_SECONDS)
                code = t.process.poll()
                if code is None:
                    continue
                t.process = None
                self._log(t, f"run exited with {code}")
                if code == 0:
                    self._set(t, State.FINISHED)
                    continue
                t.errors += 1
                if t.errors >= MAX_RUN_ERRORS:
                    self._set(t, State.BROKEN, f"run exited with {code}, error {t.errors} of {MAX_RUN_ERRORS}")
                    continue
                self._set(t, State.ERRORED, f"run exited with {code}; restarting")
                self._run_to_end(t, "recover", required=False)  # as the nucleus does before a restart
                self._start_run(t, _step(t.component, "run"))

    def reconfigure(self) -> list[str]:
        """Apply the configuration that configuration.json now holds; restart the components whose filled-in lifecycle
        changed. A failure is recorded in the state file and changes nothing."""
        generation, _ = read_configuration(self.plan.root)
        try:
            plan = plan_deployment(
                self.plan.build_dir, DeployOptions(root=self.plan.root, thing_name=self.plan.thing_name)
            )
            changed = [
                t
                for t in self.tracked
                if _filled_in(self.plan, t.component) != _filled_in(plan, plan.component(t.component.name))
            ]
        except PackagerError as exc:
            self.configuration_generation, self.configuration_result = generation, {"error": str(exc)}
            self._write_state()
            return []
        self.plan = plan
        restarted = []
        for t in self.tracked:
            t.component = plan.component(t.component.name)
            run = _step(t.component, "run")
            if t not in changed or run is None or t.state not in (State.RUNNING, State.FINISHED, State.ERRORED):
                continue
            self._log(t, f"configuration generation {generation} changes its lifecycle: restarting Run")
            if t.process is not None:
                _end_group(t.process, STOP_GRACE_SECONDS)
                t.process = None
            t.errors = 0
            self._start_run(t, run)
            restarted.append(t.component.name)
        self.configuration_generation, self.configuration_result = generation, {"restarted": restarted}
        self._write_state()
        return restarted

    def stop(self) -> None:
        """Dependents first: each Shutdown step, then the Run process group."""
        for t in reversed(self.tracked):
            if t.state in (State.NEW, State.STOPPED):
                continue
            self._set(t, State.STOPPING)
            try:
                self._run_to_end(t, "shutdown", required=False)
            except Exception as exc:  # a failing Shutdown must not keep the other components running
                self._log(t, f"shutdown failed: {exc}")
            if t.process is not None:
                _end_group(t.process, STOP_GRACE_SECONDS)
                t.process = None
            self._set(t, State.STOPPED)


def _filled_in(plan: DeploymentPlan, component: LocalComponent):
    """The component's lifecycle with every recipe variable filled in: what a configuration change can restart."""

    def fill(value):
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return interpolate(value, plan, component) if isinstance(value, str) else value

    return fill(component.lifecycle)


def running_in(root: Path) -> int | None:
    """The pid of the deploy-local running in root, if one is."""
    return _live_pid(Path(root) / PID_FILE)


def update_running(root: Path, updates: dict, build_dir: Path | None = None, timeout: float = 120.0) -> list[str]:
    """Check a configuration update against the build that the deploy-local in root runs, hand it over, and wait
    until it is applied; the components restarted. Nothing changes when the check fails."""
    pid, state = running_in(root), read_state(root)
    if pid is None or state is None:
        raise ConflictException(f"no deploy-local is running in {root}", str(root), "Deployment")
    running_build = Path(state["build_dir"])
    if build_dir is not None and Path(build_dir).resolve() != running_build.resolve():
        raise ConflictException(
            f"deploy-local (pid {pid}) in {root} runs {running_build}, not {build_dir}; stop it to "
            "deploy another build",
            str(root),
            "Deployment",
        )
    plan = plan_deployment(running_build, DeployOptions(root=root, configuration_updates=updates))
    generation = read_configuration(root)[0] + 1
    write_configuration(root, generation, {c.name: c.configuration for c in plan.components})
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while (state := read_state(root) or {}).get("configuration_generation", 0) < generation:
        if time.monotonic() > deadline or running_in(root) != pid:
            raise InternalServerException(
                f"deploy-local (pid {pid}) in {root} did not apply the configuration update within {timeout:g} s"
            )
        time.sleep(0.05)
    result = state.get("configuration_result", {})
    if "error" in result:
        raise InternalServerException(
            f"deploy-local in {root} could not apply the configuration update: {result['error']}"
        )
    return list(result.get("restarted", []))


def _run_group(process: subprocess.Popen | None) -> dict:
    """The Run step's process group (its leader's pid, as it was started in a session of its own) and start time."""
    if process is None or process.poll() is not None:
        return {"pid": None, "pid_start": None}
    return {"pid": process.pid, "pid_start": process_start_time(process.pid)}


def _write_state(root: Path, doc: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".state.")
    with os.fdopen(fd, "w") as handle:
        json.dump(doc, handle, indent=2)
    os.replace(tmp, root / STATE_FILE)


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _still_ours(pgid: int, leader_start: str | None) -> bool:
    """Whether a recorded Run group still runs: its leader is the very process started then, or the leader has
    exited and members remain (the kernel hands no new process the id of a live group)."""
    members = _group_members(pgid)
    if pgid in members:
        return process_start_time(pgid) == leader_start
    return bool(members)


def _end_orphan_group(pgid: int, grace: float) -> None:
    """_end_group for a group that is not our child: watch /proc instead of waiting on it."""
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _group_members(pgid):
            return


def stop_orphans(root: Path) -> list[str]:
    """End the Run process groups that a deploy-local which was killed outright left running in root, dependents
    first, and mark them STOPPED; the names of those it ended. Their Shutdown steps do not run."""
    state = read_state(root)
    if state is None:
        return []
    stopped, recorded = [], False
    for name, component in reversed(list(state["components"].items())):
        pgid = component.get("pid")
        if not pgid:
            continue
        recorded = True
        if _still_ours(pgid, component.get("pid_start")):
            _end_orphan_group(pgid, STOP_GRACE_SECONDS)
            stopped.append(name)
        component.update(pid=None, pid_start=None, state=State.STOPPED.value)
    if recorded:
        _write_state(root, state)
    return stopped


def claim_root(root: Path) -> Path:
    """One deploy-local per root: the pid file names the live one."""
    root.mkdir(parents=True, exist_ok=True)
    pid_file = root / PID_FILE
    owner = _live_pid(pid_file)
    if owner is not None and owner != os.getpid():
        raise ConflictException(
            f"deploy-local (pid {owner}) is already running in {root}; stop it with deploy-local --stop --root {root}",
            str(root),
            "Deployment",
        )
    pid_file.write_text(f"{os.getpid()}\n")
    return pid_file


def _live_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def request_stop(root: Path, timeout: float = 60.0) -> int | None:
    """Ask the deploy-local running in root to stop, and wait until it has; None when none was running."""
    pid_file = root / PID_FILE
    pid = _live_pid(pid_file)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _live_pid(pid_file) == pid:  # it removes the pid file once everything has stopped
        if time.monotonic() > deadline:
            raise InternalServerException(f"deploy-local (pid {pid}) did not stop within {timeout:g} s")
        time.sleep(0.1)
    return pid


def read_state(root: Path) -> dict | None:
    try:
        return json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
