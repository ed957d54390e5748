"""Only packager's own lines on the terminal: the libraries it drives (transformers, PEFT, bitsandbytes,
compressed-tensors, optimum, huggingface_hub) print warnings, advisories and progress bars of their own, which
would come before or between packager's one-line answers. They are silenced where they start (environment
defaults read at import, logger levels, the warnings filter), unless the user asks for them with --debug."""

from __future__ import annotations

import logging
import os
import warnings

QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",  # libraries' bars (compressed-tensors, transformers); packager's own asks for one itself
    "TOKENIZERS_PARALLELISM": "false",  # its fork warning
}
NOISY_LOGGERS = ("bitsandbytes", "transformers", "peft", "accelerate", "optimum", "onnxruntime", "compressed_tensors",
                 "torch", "datasets", "huggingface_hub", "urllib3", "docker")  # fmt: skip


def quiet_libraries(debug: bool) -> None:
    """Silence third-party output for this process (a user's own setting of any variable wins)."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(message)s")
    if debug:
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    warnings.simplefilter("ignore")  # packager says what it has to say in its own lines, never as a warning
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
