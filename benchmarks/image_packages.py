"""What the image's `apt-get install` adds to python:3.11-slim-bookworm, estimated without Docker:
apt-get's own simulation (`apt-get install --simulate --no-install-recommends`) against a dpkg
status that holds only the base image's packages (Debian's required ones, apt, and the libraries
and data python:3.11-slim keeps, with their dependencies), for the run-time list alone (what the
Dockerfile installs now) and with the tests' list (what it installed before). Sizes are the
packages' Installed-Size, summed: the unpacked size on disk, before the layer is compressed.

    python benchmarks/image_packages.py          # on Debian bookworm, with apt's lists
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATUS = Path("/var/lib/dpkg/status")
# What python:3.11-slim-bookworm installs on debian:bookworm-slim (its Dockerfile: certificates,
# netbase, tzdata and the shared libraries its Python links against).
PYTHON_SLIM = ["apt", "ca-certificates", "netbase", "tzdata", "libssl3", "libsqlite3-0", "libffi8", "libbz2-1.0",
               "liblzma5", "zlib1g", "libncursesw6", "libtinfo6", "libreadline8", "libexpat1", "libuuid1", "libgdbm6",
               "libdb5.3", "libnsl2", "libtirpc3"]  # fmt: skip


def listed(name: str) -> list[str]:
    text = (ROOT / "scripts" / name).read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def status_entries() -> dict[str, str]:
    """This machine's dpkg status, one entry per installed package."""
    entries = {}
    for block in STATUS.read_text().split("\n\n"):
        match = re.search(r"^Package: (\S+)", block, re.M)
        if match and "Status: install ok installed" in block:
            entries[match.group(1)] = block.strip()
    return entries


def closure(packages: list[str]) -> set[str]:
    done = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                           "--no-breaks", "--no-replaces", "--no-enhances", "--installed", *packages],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return {line.split(":")[0] for line in done.stdout.splitlines() if line and not line.startswith((" ", "<"))}


def base_status(entries: dict[str, str], folder: Path) -> Path:
    required = [name for name, block in entries.items() if re.search(r"^Priority: required", block, re.M)]
    base = closure(required + PYTHON_SLIM) & set(entries)
    path = folder / "status"
    path.write_text("\n\n".join(entries[name] for name in sorted(base)) + "\n")
    return path


def simulate(status: Path, packages: list[str]) -> tuple[int, int]:
    """(packages apt would install, their Installed-Size in kB)."""
    done = subprocess.run(["apt-get", "install", "--simulate", "--no-install-recommends", "-o",
                           f"Dir::State::status={status}", "-o", "Debug::NoLocking=1", *packages],
                          capture_output=True, text=True, check=True)  # fmt: skip
    installs = re.findall(r"^Inst (\S+) \((\S+)", done.stdout, re.M)
    shown = subprocess.run(["apt-cache", "show", *(f"{name}={version}" for name, version in installs)],
                           capture_output=True, text=True, check=True).stdout  # one record per package asked
    sizes = [int(size) for size in re.findall(r"^Installed-Size: (\d+)", shown, re.M)]
    assert len(sizes) == len(installs), (len(sizes), len(installs))
    return len(installs), sum(sizes)


def main() -> int:
    run_time, tests = listed("apt-packages.txt"), listed("apt-packages-test.txt")
    with tempfile.TemporaryDirectory() as folder:
        status = base_status(status_entries(), Path(folder))
        for label, packages in (("run-time list (the image now)", run_time),
                                ("run-time + tests' lists less redis-server (the image before)",
                                 run_time + [p for p in tests if p != "redis-server"])):  # fmt: skip
            count, size_kb = simulate(status, packages)
            print(f"{label}: {count} packages, {size_kb / 1024:.0f} MB installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
