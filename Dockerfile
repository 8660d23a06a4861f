# MediRound Serve image: the `mediround` package (model, serving, generated gRPC code, the shipped tiny
# checkpoint) on Python 3.11 with Ray. It runs `mediround serve` on its own and is the image of every pod
# of the Helm chart (Ray head, workers, gRPC front). CPU by default:
#   docker build -t mediround .
# GPU: a CUDA base and the matching torch wheel index, e.g.
#   docker build -t mediround-gpu --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# torch comes first, exact and from this index: pyproject pins torch==2.13.0, which pip then leaves alone
# (any looser request pulls PyPI's multi-GB CUDA build).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

ARG DEBIAN_FRONTEND=noninteractive
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# wget: KubeRay's injected probes call it. Python 3.11 from apt only where the base has none (CUDA images).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates wget \
    && if ! command -v python3.11 >/dev/null; then \
         apt-get install -y --no-install-recommends python3.11 python3.11-venv; fi \
    && rm -rf /var/lib/apt/lists/*

RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# KubeRay starts Ray through `bash -l`, whose /etc/profile resets PATH: put the venv back there too.
RUN echo 'export PATH=/opt/venv/bin:$PATH' > /etc/profile.d/mediround-venv.sh

RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY model/ model/
COPY serving/ serving/
RUN pip install . && rm -rf /src

# Stable paths the chart and CMD use: the shipped tiny checkpoint (package data) and the Serve configs.
COPY deploy/serve/ /opt/mediround/serve/
RUN mkdir -p /opt/mediround/checkpoints \
    && ln -s /opt/venv/lib/python3.11/site-packages/model/checkpoints/tiny /opt/mediround/checkpoints/tiny \
    && test -f /opt/mediround/checkpoints/tiny/model.safetensors

RUN groupadd --gid 1000 mediround && useradd --uid 1000 --gid 1000 --create-home mediround \
    && mkdir -p /data && chown 1000:1000 /data
# The embedded Redis's append-only file (mediround serve without a Redis URL): a volume, not the container.
ENV MEDIROUND_DATA_DIR=/data
VOLUME /data
USER 1000:1000
WORKDIR /home/mediround

# gRPC (mediround.v1.MediRound, grpc.health.v1, reflection) and Prometheus metrics.
EXPOSE 50051 9464
ENTRYPOINT ["mediround"]
CMD ["serve", "--address", "0.0.0.0:50051", "--metrics-port", "9464", \
     "--serve-config", "/opt/mediround/serve/cpu-tiny.yaml"]
