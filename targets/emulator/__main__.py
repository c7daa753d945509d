"""python -m targets.emulator: run the emulated ARM64 device in the foreground until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys

from packager.errors import PackagerError
from targets.address import parse_address
from targets.emulator import start_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m targets.emulator", description=__doc__)
    parser.add_argument("--port", type=int, help="port to listen on (default: a free one)")
    parser.add_argument("--tracker", help="HOST:PORT of a TVM RPC tracker to register with")
    parser.add_argument("--key", default="arm64-emulated", help="key to register under (default arm64-emulated)")
    args = parser.parse_args(argv)
    try:
        tracker = parse_address(args.tracker, "--tracker") if args.tracker else None
        server = start_server(args.port, tracker=tracker, key=args.key)
    except PackagerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    # On SIGTERM too, stop the whole server process group (its RPC worker outlives a killed parent).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    where = f"registered with {args.tracker} as {args.key}" if tracker else f"use --device-rpc 127.0.0.1:{server.port}"
    print(f"emulated ARM64 device listening on 127.0.0.1:{server.port} ({where}); log {server.log_path}", flush=True)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
