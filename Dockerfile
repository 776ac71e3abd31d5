# syntax=docker/dockerfile:1
# melodybot: one image for the bot (`python -m bot`, the default command) and its workers
# (`python -m bot.worker ...`, see compose.yaml).
#
#   docker build -t melodybot .                                   # CPU torch (the default)
#   docker build -t melodybot:cuda \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .   # CUDA worker image
#
# The CUDA wheels bring their own CUDA runtime (nvidia-* wheels), so the slim base is enough; the
# host needs the NVIDIA driver and container toolkit (see the worker-cuda service in compose.yaml).
FROM python:3.11-slim-bookworm

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    MELODYBOT_DATA_DIR=/data \
    MELODYBOT_HTTP_PORT=8080

# System packages: the run-time list, which scripts/setup also reads (it adds the tests' list,
# scripts/apt-packages-test.txt: redis-server, ffmpeg, the fluidsynth program, none of them used
# here; Redis runs in its own container, see compose.yaml).
COPY scripts/apt-packages.txt /tmp/apt-packages.txt
RUN apt-get update \
    && grep -v '^#' /tmp/apt-packages.txt \
       | DEBIAN_FRONTEND=noninteractive xargs apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/* /tmp/apt-packages.txt

# The Python packages through scripts/install-python, which scripts/setup runs too: first torch,
# from its own index (the CPU wheels unless TORCH_INDEX says otherwise: PyPI's pulls CUDA, GBs),
# and the other pins of pyproject.toml, from these two files alone, so that this layer stays
# cached while the source changes.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml ./
COPY scripts/install-python scripts/
RUN scripts/install-python deps

# Then the project itself, with every learned artefact (package data model/weights/*: the melody
# and chord models, ...); the script checks that the installed package loads them
# (`python -m bot.worker --check`) and that its commands start.
COPY README.md ./
COPY model/ model/
COPY bot/ bot/
RUN scripts/install-python project

# A fixed numeric user (runAsNonRoot-friendly); /data (SQLite, outputs) is its to write.
RUN groupadd --system --gid 10001 melodybot \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --create-home melodybot \
    && mkdir -p /data && chown 10001:10001 /data
USER 10001:10001
WORKDIR /data

EXPOSE 8080
# GET /healthz on MELODYBOT_HTTP_PORT (passes when that is 0: no endpoint to ask).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "bot.observability", "healthcheck"]

CMD ["python", "-m", "bot"]
