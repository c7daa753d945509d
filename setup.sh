#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine (run as root or with sudo available):
# system packages for cross-compiling and emulating ARM64, then the Python packages.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if command -v apt-get >/dev/null 2>&1; then
  # gcc-aarch64-linux-gnu links ARM64 libraries; qemu-user-static runs the emulated ARM64 device in tests.
  # postgresql, redis-server (team tests) and mosquitto (Edge Agent MQTT tests): the tests start their own throw-away
  # servers on loopback; the packages' own services are not used.
  # openssl makes the throw-away CA of the MQTT-over-TLS test.
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static postgresql redis-server mosquitto openssl
else
  echo "setup.sh: no apt-get; install an aarch64-linux-gnu gcc and qemu-user-static yourself for ARM64 targets" >&2
fi

python3 -m pip install --disable-pip-version-check -q -e ".[torch,test,team,bench]"

# The emulated ARM64 device used by the tests and by --device-rpc on this machine: Debian arm64 Python and the
# aarch64 wheels of apache-tvm, apache-tvm-ffi and numpy in .cache/arm64-sysroot (idempotent; about 530 MB).
if command -v apt-get >/dev/null 2>&1; then
  $SUDO bash targets/emulator/prepare_arm64.sh
fi
echo "setup.sh: done. Try: python -m packager build"
