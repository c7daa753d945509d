"""The target catalog: every place a packaged model can run, as one frozen record each."""

from targets.catalog import (
    CompilerOptions,
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

__all__ = [
    "CompilerOptions",
    "CudaRuntime",
    "GreengrassPlatform",
    "RuntimeNeeds",
    "Target",
    "TargetRequest",
    "get_target",
    "host_target",
    "resolve_target",
    "target_names",
]
