"""The target catalog: every place a packaged model can run, as one frozen record each."""

from targets.catalog import (
    CudaRuntime,
    GreengrassPlatform,
    RuntimeNeeds,
    Target,
    TargetRequest,
    get_target,
    host_target,
    resolve_target,
    target_names,
)
from targets.options import CompilerOptions, ParsedCompilerOptions, parse_compiler_options

__all__ = [
    "CompilerOptions",
    "CudaRuntime",
    "GreengrassPlatform",
    "RuntimeNeeds",
    "Target",
    "TargetRequest",
    "get_target",
    "host_target",
    "parse_compiler_options",
    "ParsedCompilerOptions",
    "resolve_target",
    "target_names",
]
