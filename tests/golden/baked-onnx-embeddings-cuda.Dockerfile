# Rendered by packager 0.1.0 - layout: baked (merged weights inside the image).
# Weights come first, one layer per file, so rebuilding after a runtime change reuses them.
# Each layer's folder mirrors the image's paths, and packager stamps every entry with fixed times and modes,
# so a layer's digest depends on its files alone, not on the build cache or the clock.
# A CUDA image: run it on a GPU host, `docker run --gpus all --shm-size 1g ...` (it cannot run without one).
FROM pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime

# packager's own server on PyTorch's CUDA image: its serving stack, pinned, installed once before the model.
RUN python3 -m pip install --no-cache-dir \
      transformers==4.57.6 \
      peft==0.21.2 \
      safetensors==0.8.0 \
      tokenizers==0.22.2 \
      huggingface_hub==0.36.2 \
      fastapi==0.165.0 \
      uvicorn==0.54.0 \
      pillow==13.0.0 \
      compressed-tensors==0.17.0 \
      optimum==2.1.0 \
      optimum-onnx==0.1.0 \
      onnx==1.23.2 \
      onnxruntime-gpu==1.31.1

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
LABEL io.packager.accuracy="{\"cosine_mean\":0.989,\"cosine_min\":0.973,\"kind\":\"onnx-int8\",\"max_abs_diff\":0.037,\"size_ratio\":0.25}" \
      io.packager.adapter.sha256="abababababababababababababababababababababababababababababababab" \
      io.packager.backend="onnx" \
      io.packager.base.id="acme/tiny-llama" \
      io.packager.base.revision="0123456789abcdef" \
      io.packager.layout="baked" \
      io.packager.port="8000" \
      io.packager.quantization="onnx-int8" \
      io.packager.runtime="packager" \
      io.packager.version="0.1.0" \
      org.opencontainers.image.base.name="pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime" \
      org.opencontainers.image.description="LLM adapter served by packager (baked layout)" \
      org.opencontainers.image.title="127.0.0.1:5000/acme/demo" \
      org.opencontainers.image.version="1.0"
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["python3", "-m", "packager_runtime.server", "--config", "/opt/packager/runtime.json"]
