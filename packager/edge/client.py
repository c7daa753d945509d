"""Connecting a client app to the Edge Agent: the channel options under which large bitmaps travel cheaply.

    from lookout_edge.client import connect
    stub = connect()  # the agent's default socket; or connect("unix:///run/agent.sock")

Lookout's clients opened a plain ``grpc.insecure_channel`` on the socket, and that keeps working. These options
only make it faster, which matters most for a mask returned inside the message (width x height x 3 bytes).
"""

from __future__ import annotations

import grpc

from . import DEFAULT_SOCKET
from . import edge_agent_pb2_grpc as pb_grpc
from .bitmaps import MAX_MESSAGE_BYTES

# gRPC's default flow control starts each stream with a 64 KiB window and grows it from bandwidth-delay probes,
# which on a Unix socket leave a 224x224 mask (147 KiB) waiting on window updates: about 1 ms per call here.
# A fixed 8 MiB window sends it at once.
FLOW_CONTROL_OPTIONS = (("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 8 << 20))
CHANNEL_OPTIONS = FLOW_CONTROL_OPTIONS + (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)


def channel(address: str = DEFAULT_SOCKET) -> grpc.Channel:
    """A channel to the agent that can carry a 4096x4096 bitmap or mask inline, without flow-control stalls."""
    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)


def connect(address: str = DEFAULT_SOCKET) -> pb_grpc.EdgeAgentStub:
    return pb_grpc.EdgeAgentStub(channel(address))
