"""Who may connect to the agent's Unix socket: its mode and group, from the agent component's configuration.

Connecting to a Unix socket needs write permission on it, and the mode bind() leaves comes from the umask (0755:
only the owner). The agent sets the configured mode and group once it listens, so client apps in that group
connect without anyone running chmod.
"""

from __future__ import annotations

import grp
import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SOCKET_MODE = "0660"  # the agent's user and group; "0666" lets every local user connect


class SocketAccessError(ValueError):
    pass


@dataclass(frozen=True)
class SocketAccess:
    mode: int
    gid: int | None  # None: the group the agent runs as

    @classmethod
    def parse(cls, mode: str, group: str) -> SocketAccess:
        """mode: octal permission bits such as "0660"; group: a group name or number, "" for the agent's own."""
        if not re.fullmatch(r"0?[0-7]{3}", mode or ""):
            raise SocketAccessError(f"socket mode {mode[:20]!r} must be octal permission bits such as 0660")
        bits = int(mode, 8)
        if bits & 0o600 != 0o600:
            raise SocketAccessError(f"socket mode {mode} must let the agent's own user read and write (0600)")
        if not group:
            return cls(bits, None)
        if group.isdigit():
            return cls(bits, int(group))
        try:
            return cls(bits, grp.getgrnam(group).gr_gid)
        except KeyError:
            raise SocketAccessError(f"socket group {group[:64]!r} does not exist on this device") from None

    def apply(self, path: Path) -> None:
        try:
            if self.gid is not None:
                os.chown(path, -1, self.gid, follow_symlinks=False)
            os.chmod(path, self.mode)
        except OSError as exc:
            raise SocketAccessError(
                f"cannot set {path} to mode {self.mode:04o}"
                f"{f' and group {self.gid}' if self.gid is not None else ''}: {exc.strerror}"
            ) from None
