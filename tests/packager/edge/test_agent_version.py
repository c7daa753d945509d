"""A published component version is immutable, so the Edge Agent's files may change only under a new AGENT_VERSION."""

from __future__ import annotations

import hashlib
import json

from packager.edge import AGENT_VERSION
from packager.greengrass.bundle import agent_archive_entries, agent_lifecycle
from targets import get_target

# AGENT_VERSION -> fingerprint of what that version ships. Add a line whenever you bump the version.
RELEASED = {
    "1.1.0": "898b527a796eeffd4ad59e1b44bbc2846ba3af279c27a617723a22b41220d55e",
    "1.1.1": "6e52b3f5fa0163cf0bce1024e73b996dc0353aa204d05065b55eda5d83f5a4a9",
    "1.1.2": "b637a2e8c560918934b2af2810dfb8aadf99c133d051ff6f53e46c4e7474836b",
    "1.2.0": "3d6411bc709f9ad3072cf79743f291d20f6d563775955e59fc0fc422dda0a25c",  # MQTT, capture, socket access, classification models, the graph's label and mask
    "1.2.1": "cc1d9c4d6bb58baad5036f85fc5b8608b823e1f1efef1b321cf3ca86213265aa",  # one bilinear axis for the map and the mask; runner.py is classify.py; ruff-formatted
    "1.2.2": "642cff83cd73ea7074e2c066fb342fbd1da1e1c1ec9c12a369fe54490ea09d96",  # TVM imported without tvm_ffi's PyTorch import
    "1.2.3": "9209920286a9a9b4668720569467cc07cd71b6d72c65da7fe0da300a914e142d",  # the MQTT publisher logs a drop at once when its reason changes
    "1.2.4": "186260a45ba800edb6dba61873c36ad111f583d2e4a56ccc1f5ed15b784626b6",  # a CPU model runs through tvm_ffi and libtvm_runtime.so, without the tvm package
}


def agent_fingerprint() -> str:
    """The agent's archive entries and lifecycle, for the CPU flavour and a CUDA one; ZIP compression left out."""
    digest = hashlib.sha256()
    for target in (get_target("LINUX/X86_64"), get_target("jetson_xavier")):
        for name, data in agent_archive_entries(target):
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        digest.update(json.dumps(agent_lifecycle(target), sort_keys=True).encode())
    return digest.hexdigest()


def test_the_agents_files_change_only_with_its_version():
    fingerprint = agent_fingerprint()
    assert AGENT_VERSION in RELEASED, f"record AGENT_VERSION {AGENT_VERSION} in RELEASED with fingerprint {fingerprint}"
    assert RELEASED[AGENT_VERSION] == fingerprint, (
        f"packager/edge or the agent's recipe changed since Edge Agent {AGENT_VERSION} was recorded: bump AGENT_VERSION "
        f"in packager/edge/__init__.py and record it here with fingerprint {fingerprint}"
    )
