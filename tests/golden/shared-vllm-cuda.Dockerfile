# Rendered by packager 0.1.0 - layout: shared base.
# The image carries adapters and the runtime only; mount the base read-only at /base.
# At start the runtime checks the mounted base against packager.lock.json and refuses the wrong one.
# Each layer's folder mirrors the image's paths, and packager stamps every entry with fixed times and modes,
# so a layer's digest depends on its files alone, not on the build cache or the clock.
# A CUDA image: run it on a GPU host, `docker run --gpus all --shm-size 1g ...` (it cannot run without one).
FROM vllm/vllm-openai:v0.32.0

COPY --chown=10001:10001 ["adapters/sql/", "/"]
COPY --chown=10001:10001 ["adapters/chat/", "/"]
COPY --chown=10001:10001 ["runtime/", "/"]
COPY --chown=10001:10001 ["config/", "/"]

ENV PYTHONPATH=/opt/packager:/opt/runtime \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1 \
    PORT=8000
LABEL io.packager.adapter.sha256="sql=cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd,chat=efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef" \
      io.packager.backend="transformers" \
      io.packager.base-mount="/base" \
      io.packager.base.id="acme/tiny-llama" \
      io.packager.base.revision="0123456789abcdef" \
      io.packager.layout="shared" \
      io.packager.port="8000" \
      io.packager.quantization="none" \
      io.packager.runtime="vllm" \
      io.packager.version="0.1.0" \
      org.opencontainers.image.base.name="vllm/vllm-openai:v0.32.0" \
      org.opencontainers.image.description="LLM adapter served by packager (shared layout)" \
      org.opencontainers.image.title="acme/shared" \
      org.opencontainers.image.version="2"
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["python3", "-m", "packager_runtime.vllm_launch", "--config", "/opt/packager/runtime.json"]
