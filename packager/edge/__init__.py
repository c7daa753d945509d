"""The on-device runtime. Shipped inside the component's artifact as the package ``lookout_edge``.

Everything here imports only the standard library, numpy and the TVM runtime
(grpcio for the agent): it must run on a device with no compiler and no packager.
"""

# The Edge Agent component's version: bump it whenever this package changes, because a published
# component version is immutable and the agent's artifact is built from these files.
AGENT_VERSION = "1.2.4"

# Where the agent listens unless its configuration says otherwise: Lookout's own socket, so client apps need no change.
DEFAULT_SOCKET = "unix:///tmp/aws.iot.lookoutvision.EdgeAgent.sock"
