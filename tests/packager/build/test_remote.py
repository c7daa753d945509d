"""packager/build/remote.py without a device: connection limits (the RPC runner itself runs in tests/targets)."""

from __future__ import annotations

import socket

import pytest

from packager.build.remote import RemoteDevice, open_device
from packager.errors import ValidationException


def test_a_device_that_never_answers_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with pytest.raises(ValidationException, match=f"no answer from the device at rpc 127.0.0.1:{port} within 2 s"):
            with open_device(RemoteDevice("127.0.0.1", port, connect_timeout_s=2)):
                pass
