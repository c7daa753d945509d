"""python -m packager tune: tune a model for a target into the tuning cache, or move the cache's records.

    python -m packager tune --trials 64                      # the bundled example, this machine's CPU
    python -m packager tune --model m.onnx --target-platform LINUX/ARM64 --rpc-tracker host:9190 --rpc-key rpi4
    python -m packager tune --export team.json               # every record in the cache
    python -m packager tune --import team.json               # merge someone else's records
    python -m packager tune --list

A later build of the same model for the same target applies the cached records without tuning again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from packager.commands.arguments import add_target_arguments, add_tracker_arguments, target_from_args
from packager.commands.command import Command
from packager.errors import ValidationException
from packager.example_model import example_model_paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="trained model: .onnx, .pt2 or .pt (default: the bundled example)")
    parser.add_argument("--model-spec", type=Path, help="model spec JSON (default: inferred, or the example's)")
    parser.add_argument("--trials", type=int, default=64, help="measurement trials in total (default 64)")
    parser.add_argument(
        "--tuning-cache", type=Path, help="cache directory (default $PACKAGER_HOME/tuning, ~/.packager/tuning)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    moves = parser.add_mutually_exclusive_group()
    moves.add_argument(
        "--export", type=Path, metavar="FILE", help="write the cache's records (one target's with target flags) to FILE"
    )
    moves.add_argument(
        "--import", dest="import_file", type=Path, metavar="FILE", help="merge the records of an exported FILE"
    )
    moves.add_argument("--list", action="store_true", help="list the targets the cache holds records for")
    add_target_arguments(parser.add_argument_group("target (as for build; default: this machine's CPU)"))
    add_tracker_arguments(parser.add_argument_group("measure on a remote device (TVM RPC tracker)"))


def _target_given(args: argparse.Namespace) -> bool:
    return any(
        v is not None for v in (args.target_device, args.target_platform, args.accelerator, args.compiler_options)
    )


def _rpc_config(args: argparse.Namespace):
    from compilers.tuning.measure import RpcConfig
    from targets.address import parse_address

    if args.rpc_tracker is None:
        if args.rpc_key is not None:
            raise ValidationException("--rpc-key needs --rpc-tracker", field="--rpc-key")
        return None
    if not args.rpc_key:
        raise ValidationException("--rpc-tracker needs --rpc-key naming the device kind", field="--rpc-key")
    host, port = parse_address(args.rpc_tracker, "--rpc-tracker")
    return RpcConfig(host, port, args.rpc_key)


def run(args: argparse.Namespace) -> int:
    from compilers.tuning.cache import open_tuning_cache
    from packager.home import tuning_cache_dir

    cache = open_tuning_cache(args.tuning_cache or tuning_cache_dir())
    if args.list:
        for entry in cache.entries():
            print(f"{entry.directory.name}  {entry.records} records, {entry.workloads} workloads  {entry.tvm_target}")
        return 0
    if args.import_file is not None:
        print(f"imported {cache.import_file(args.import_file)} new records into {cache.root}")
        return 0
    if args.export is not None:
        target = target_from_args(args).target if _target_given(args) else None
        print(f"exported {cache.export(args.export, target)} records to {args.export}")
        return 0
    if args.trials < 1:
        raise ValidationException(f"--trials must be at least 1, got {args.trials}", field="--trials")
    return _tune(args, cache, target_from_args(args).target, _rpc_config(args))


def _tune(args, cache, target, rpc) -> int:
    from compilers.frontends.intake import import_model
    from compilers.tuning.tune import tune
    from compilers.tvm_compile import relax_for_target

    model, spec = args.model, args.model_spec
    if model is None:
        model, default_spec = example_model_paths()
        spec = spec or default_spec
    imported = import_model(model, spec)
    mod, _ = relax_for_target(imported, target)
    result = tune(mod, target, args.trials, cache, progress=not args.quiet, rpc=rpc)
    for task in result.tasks:
        if task.cached:
            line = f"cached, best {task.best_ms:.3f} ms" if task.best_ms is not None else "cached"
        else:
            line = f"{task.trials} trials, default {_ms(task.default_ms)}, best {_ms(task.best_ms)}"
        print(f"  {task.name:48s} {line}")
    print(
        f"target {target.name}: {result.trials} trials in {result.seconds:.1f} s, "
        f"{result.cached_tasks} task(s) already cached; records in {cache.directory_for(target.tvm_target)}",
        file=sys.stdout,
    )
    return 0


def _ms(value) -> str:
    return "n/a" if value is None else f"{value:.3f} ms"


COMMAND = Command(
    name="tune",
    help="tune a model for a target into the tuning cache; export or import tuning records",
    add_arguments=add_arguments,
    run=run,
)
