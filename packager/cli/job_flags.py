"""The flags of `package` and `render`, grouped as a reader looks for them (inputs, artefact, serving, sizing,
image, deployment, output), every default stated and every choice read from the registry it belongs to."""

from __future__ import annotations

import argparse
import os

from packager.cli.artefact import add_artefact_flags
from packager.cli.common import add_deploy_flags, add_qlora_flags, add_task_flag
from packager.cli.sizing import add_sizing_flags
from packager.dtypes import CLI_CHOICES

EXAMPLES = """\
examples:
  packager package --adapter ./my-lora --layout baked --dry-run        the whole plan, nothing done
  packager package --adapter ./my-lora --layout baked                  merge, build an image (the runtime image
                                                                       is built first if missing)
  packager package --adapter sql=./sql --adapter chat=./chat --layout shared --device cuda --gpu-memory 80
  packager package --adapter ./my-lora --layout baked --quantize w8a8 --calibrate \\
                   --tag 127.0.0.1:5000/acme/chat:1 --push              quantized, pushed, manifests pinned
"""


def add_job_flags(p: argparse.ArgumentParser, command: str) -> None:
    """Every flag of `package` (`command` "package") or `render`, in groups."""
    from packager.builders import BUILDERS, help_text
    from packager.choices import DEVICES, LAYOUTS, RUNTIMES
    from packager.signing.keys import SIGN_KEY_ENV

    inputs = p.add_argument_group("inputs: the adapter and its base")
    inputs.add_argument("--adapter", action="append", required=True, metavar="PATH|NAME=PATH",
                        help="adapter folder (repeat for several adapters in the shared layout)")  # fmt: skip
    inputs.add_argument("--layout", required=True, choices=LAYOUTS,
                        help="baked: merged weights in the image; shared: adapters only, base mounted read-only "
                        "at /base")  # fmt: skip
    inputs.add_argument("--base", metavar="PATH|HUB_ID", help="base model (default: from the adapter config)")
    inputs.add_argument("--revision", help="hub revision of the base (default: the adapter config's, else main)")
    inputs.add_argument("--checkpoint", type=int, metavar="N",
                        help="a training run's checkpoint-N (or LitGPT step-N) (default: the newest)")  # fmt: skip
    inputs.add_argument("--allow-pickle", action="store_true",
                        help="accept .bin/.pt weights, loaded with weights_only=True (default: refused)")  # fmt: skip
    add_task_flag(inputs)
    add_qlora_flags(inputs)

    made = p.add_argument_group("artefact: what the image serves")
    made.add_argument("--dtype", default="auto", choices=CLI_CHOICES,
                      help="merged dtype, baked layout (default auto: the base's)")  # fmt: skip
    add_artefact_flags(made)
    made.add_argument("--no-verify", action="store_true",
                      help="skip the merge's logits parity check and the artefact's accuracy measurement")  # fmt: skip

    serving = p.add_argument_group("serving: the engine, the hardware and the context")
    serving.add_argument("--runtime", default="auto", choices=RUNTIMES,
                         help="the engine in the image: vllm (continuous batching, multi-LoRA), packager (its own "
                         "server: every artefact and model kind), auto (default: vllm where it serves the model, "
                         "else packager; the plan says why)")  # fmt: skip
    serving.add_argument(
        "--device", default="cpu", choices=DEVICES,
        help="cpu (default): built and tested here; cuda: rendered for a GPU host (vLLM's pinned image; the GPU "
        "requested in the manifests); no GPU image can be pulled or run here",
    )  # fmt: skip
    serving.add_argument("--max-model-len", type=int, metavar="N",
                         help="vLLM's context length (default: the model's own limit)")  # fmt: skip
    serving.add_argument("--port", type=int, default=8000, help="port the server listens on (default 8000)")
    add_sizing_flags(p)

    image = p.add_argument_group("image: how it is built and where it goes")
    image.add_argument("--base-image", default=os.environ.get("PACKAGER_BASE_IMAGE"), metavar="IMAGE",
                       help="the runtime image to start FROM (default: env PACKAGER_BASE_IMAGE, else the one the "
                       "plan names, built here by `packager base-image` when missing)")  # fmt: skip
    image.add_argument("--tag", metavar="[REGISTRY/]REPO:TAG",
                       help="image tag (default: packager/<adapter>:latest, local only)")  # fmt: skip
    image.add_argument("--builder", default="auto", choices=("auto", *BUILDERS), help=help_text())
    if command == "package":
        image.add_argument("--push", action="store_true", help="push the image to the registry named in --tag")
        image.add_argument("--username", help="registry user (default: your docker login)")
        image.add_argument("--password-stdin", action="store_true", help="read the registry password from stdin")
        image.add_argument("--sign-key", default=os.environ.get(SIGN_KEY_ENV), metavar="PEM",
                           help="sign the pushed image (cosign's format) and its model files (OpenSSF "
                           "model-signing) with this EC private key, and attach the BOM, the lock and both "
                           f"signatures to it as OCI referrers (env {SIGN_KEY_ENV}); needs --push")  # fmt: skip

    add_deploy_flags(p.add_argument_group("deployment: the manifests beside the image (WORK/deploy)"))

    output = p.add_argument_group("output")
    output.add_argument(
        "--work", default="packager-build", metavar="DIR",
        help="work folder: the merged model, the context, the manifests (default packager-build)",
    )  # fmt: skip
    output.add_argument("--json", action="store_true", help="print the JSON report (or plan) instead of a summary")
    if command == "package":
        output.add_argument("--report", metavar="FILE", help="also write the JSON report to FILE")
        output.add_argument("--dry-run", action="store_true",
                            help="resolve and check, print the whole plan, do nothing else")  # fmt: skip
