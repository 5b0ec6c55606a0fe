# CPU image of caft: the project, its venv (make setup: torch CPU wheel, then the locked versions), ready for
# `make demo` / `make test`. Build: docker build -t caft .   Run: docker run --rm caft make demo
# CUDA: start FROM an nvidia/cuda runtime image with python3.11 and python3.11-venv installed, then after
# make setup: .venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124
# Not built on the development machine (no Docker daemon there); make setup itself is what CI runs.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git make && rm -rf /var/lib/apt/lists/*
WORKDIR /caft
COPY . .
RUN make setup PYTHON=python3.11 && git config --global user.email caft@localhost \
    && git config --global user.name caft
ENV PATH=/caft/.venv/bin:$PATH HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
CMD ["make", "demo"]
