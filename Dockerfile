# caft with its venv (make setup: the chosen torch build, then the locked versions), ready for `make demo` /
# `make test`. Build: docker build -t caft .  (CUDA: docker build --build-arg TORCH=cuda
# --build-arg BASE=nvidia/cuda:12.8.0-runtime-ubuntu24.04 -t caft-cuda . on an image with python3 and venv.)
# Run: docker run --rm caft make demo. The recipes download models and datasets, so nothing offline is baked in;
# make demo and make test set HF_HUB_OFFLINE=1 themselves.
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG TORCH=cpu
ENV PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends git make && rm -rf /var/lib/apt/lists/*
WORKDIR /caft
COPY . .
RUN make setup TORCH=${TORCH} && git config --global user.email caft@localhost \
    && git config --global user.name caft
ENV PATH=/caft/.venv/bin:$PATH
CMD ["make", "demo"]
