"""Weight work done once, at build time, instead of on every call.

A model's weights are inputs of its Relax function (they ship in params.bin), so whatever the function computes
from them alone, a Winograd kernel transform or a bias reshaped for broadcasting, would run on every call. Here
TVM's LiftTransformParams splits that work into its own function, the build machine runs it once on the real
weights, and the model ships the results as its parameters instead.
"""

from __future__ import annotations

import numpy as np

TRANSFORM = "main_transform_params"
PREPACKED = "prepacked"  # name prefix of parameters computed here


def _without(mod, name: str):
    import tvm
    from tvm import relax

    kept = tvm.IRModule({gvar: func for gvar, func in mod.functions_items() if gvar.name_hint != name}, attrs=mod.attrs)
    entry = next(gvar.name_hint for gvar, func in kept.functions_items() if isinstance(func, relax.Function))
    return relax.transform.DeadCodeElimination(entry_functions=[entry])(kept)


def _bind_scalars(mod, params: list[tuple[str, object]]):
    """Single-element weights become constants of the module: what legalizing can fold or simplify (an exponent of 2
    is a product, not a powf call per element; pipeline.powers_as_products) instead of a value read at run time."""
    from tvm import relax

    scalars = {name: value for name, value in params if len(value.shape) <= 1 and int(np.prod(value.shape)) == 1}
    if not scalars:
        return mod, params
    bound = relax.transform.BindParams("main", scalars)(mod)
    return bound, [(name, value) for name, value in params if name not in scalars]


def prepack_weights(mod, params: list[tuple[str, object]], tvm_target) -> tuple[object, list[tuple[str, object]]]:
    """(legalized mod whose main takes the input then the prepacked weights, those weights by name).

    The transform runs here on the host CPU, whatever the target: it is plain float32 arithmetic on the weights.
    """
    import tvm
    from tvm import relax

    from compilers.schedules.pipeline import legalize

    mod, params = _bind_scalars(mod, params)
    mod = legalize(mod, tvm_target)
    lifted = relax.transform.LiftTransformParams()(mod)
    if TRANSFORM not in [gvar.name_hint for gvar in lifted.functions]:
        return mod, params
    transform = _without(lifted, "main")
    host = tvm.target.Target({"kind": "llvm"})
    with host:
        executable = tvm.compile(transform, target=host)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    results = vm[TRANSFORM]([value for _, value in params])
    main = _without(lifted, TRANSFORM)
    names = [var.name for var in main["main"].params[int(main["main"].attrs["num_input"]) :]]
    # Names only label params.bin's entries, in main's order: a weight passed through keeps its own; any other, or
    # a repeat, gets a positional one, so no two entries collide.
    unused = {name for name, _ in params}
    named = []
    for i, (name, result) in enumerate(zip(names, results)):
        label = name if name in unused else f"{PREPACKED}.{i}"
        unused.discard(label)
        named.append((label, tvm.runtime.tensor(result.numpy())))
    return main, named
