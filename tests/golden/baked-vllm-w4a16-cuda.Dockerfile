# Rendered by packager 0.1.0 - layout: baked (merged weights inside the image).
# Weights come first, one layer per file, so rebuilding after a runtime change reuses them.
# Each layer's folder mirrors the image's paths, and packager stamps every entry with fixed times and modes,
# so a layer's digest depends on its files alone, not on the build cache or the clock.
# A CUDA image: run it on a GPU host, `docker run --gpus all --shm-size 1g ...` (it cannot run without one).
FROM vllm/vllm-openai:v0.32.0

COPY --chown=10001:10001 ["model/weights/model-00001-of-00002.safetensors/", "/"]
COPY --chown=10001:10001 ["model/weights/model-00002-of-00002.safetensors/", "/"]
COPY --chown=10001:10001 ["model/meta/", "/"]
COPY --chown=10001:10001 ["runtime/", "/"]
COPY --chown=10001:10001 ["config/", "/"]

ENV PYTHONPATH=/opt/packager:/opt/runtime \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1 \
    PORT=8000
LABEL io.packager.accuracy="{\"kind\":\"compressed-tensors-w4a16\",\"kl\":0.2,\"ppl_change\":0.18,\"size_ratio\":0.3,\"top1\":0.74}" \
      io.packager.adapter.sha256="abababababababababababababababababababababababababababababababab" \
      io.packager.backend="transformers" \
      io.packager.base.id="acme/tiny-llama" \
      io.packager.base.revision="0123456789abcdef" \
      io.packager.layout="baked" \
      io.packager.port="8000" \
      io.packager.quantization="w4a16" \
      io.packager.runtime="vllm" \
      io.packager.version="0.1.0" \
      org.opencontainers.image.base.name="vllm/vllm-openai:v0.32.0" \
      org.opencontainers.image.description="LLM adapter served by packager (baked layout)" \
      org.opencontainers.image.title="127.0.0.1:5000/acme/demo" \
      org.opencontainers.image.version="1.0"
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["python3", "-m", "packager_runtime.vllm_launch", "--config", "/opt/packager/runtime.json"]
