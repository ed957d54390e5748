"""The small vocabularies a request is made of, in one torch-free place the CLI's choices, the checks and the
help all read: image layouts, target devices and serving engines."""

from __future__ import annotations

LAYOUTS = ("baked", "shared")  # merged weights in the image; adapters only, the base mounted
DEVICES = ("cpu", "cuda")
RUNTIMES = ("auto", "vllm", "packager")  # auto: vLLM where it serves the model, else packager's server
