#!/usr/bin/env bash
# Prepare an aarch64 user-space for the emulated ARM64 device: Debian's arm64 Python 3.11 and its libraries,
# unpacked (not installed) into a sysroot, plus the aarch64 wheels of the TVM runtime. Idempotent: a stamp file
# records what was unpacked, and a second run with the same inputs does nothing.
#
#   targets/emulator/prepare_arm64.sh [SYSROOT]     (default: $PACKAGER_ARM64_SYSROOT or <repo>/.cache/arm64-sysroot)
#
# Needs root (or sudo) the first time, for `dpkg --add-architecture arm64` and `apt-get update`.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
SYSROOT="${1:-${PACKAGER_ARM64_SYSROOT:-$REPO/.cache/arm64-sysroot}}"
SYSROOT="$(mkdir -p "$SYSROOT" && cd "$SYSROOT" && pwd)"

# Debian bookworm's python3.11 and the libraries it and the TVM runtime link against (apt-cache depends --recurse).
DEBS="python3.11 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
  libc6 libgcc-s1 libstdc++6 gcc-12-base zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 libsqlite3-0 libuuid1
  libncursesw6 libtinfo6 libreadline8 libcrypt1 libnsl2 libtirpc3 libgssapi-krb5-2 libk5crypto3 libkeyutils1
  libkrb5-3 libkrb5support0 libcom-err2 libdb5.3"
# Keep in step with pyproject.toml: tvm-ffi 0.1.15 segfaults.
WHEELS="apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post0 numpy ml_dtypes typing_extensions cloudpickle psutil"
STAMP="$SYSROOT/.prepared"
WANT="debs: $(echo $DEBS) | wheels: $WHEELS | layout: 3"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$SYSROOT/usr/bin/python3.11" ]; then
  echo "prepare_arm64: $SYSROOT is ready"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
for tool in qemu-aarch64-static dpkg apt-get; do
  command -v "$tool" >/dev/null || { echo "prepare_arm64: $tool is missing; run: apt-get install -y qemu-user-static" >&2; exit 1; }
done

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
fi
if ! apt-cache show python3.11:arm64 >/dev/null 2>&1; then
  $SUDO apt-get update -q
fi

DOWNLOADS="$SYSROOT/.downloads"
mkdir -p "$DOWNLOADS/debs" "$DOWNLOADS/wheels"
(
  cd "$DOWNLOADS/debs"
  pkgs=""
  for p in $DEBS; do pkgs="$pkgs $p:arm64"; done
  # apt-get download writes into the current directory; _apt cannot write under /root, so fetch as root.
  apt-get download -qq $pkgs
)
for deb in "$DOWNLOADS"/debs/*.deb; do
  dpkg -x "$deb" "$SYSROOT"
done
python3 -m pip download -q --disable-pip-version-check --only-binary=:all: --dest "$DOWNLOADS/wheels" \
  --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
  --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux_2_24_aarch64 \
  --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 --platform any \
  $WHEELS
SITE="$SYSROOT/opt/python"
rm -rf "$SITE"
mkdir -p "$SITE"
for whl in "$DOWNLOADS"/wheels/*.whl; do
  python3 -m zipfile -e "$whl" "$SITE"
done

# TVM's RPC server starts its workers with sys.executable; without binfmt_misc the kernel cannot exec an aarch64
# binary, so the guest's sys.executable is a host script that re-enters qemu.
cat > "$SYSROOT/python3-aarch64" <<SH
#!/bin/sh
exec qemu-aarch64-static -L "$SYSROOT" "$SYSROOT/usr/bin/python3.11" "\$@"
SH
chmod +x "$SYSROOT/python3-aarch64"
cat > "$SITE/sitecustomize.py" <<PY
import os
import sys

sys.executable = "$SYSROOT/python3-aarch64"
if os.environ.get("PACKAGER_EMULATOR"):
    # The device says it is an emulator, so its timings are never taken for device timings.
    import tvm_ffi

    tvm_ffi.register_global_func("packager.emulator", lambda: os.environ["PACKAGER_EMULATOR"], override=True)
PY

echo "$WANT" > "$STAMP"
echo "prepare_arm64: $SYSROOT is ready ($(du -sh "$SYSROOT" | cut -f1))"
