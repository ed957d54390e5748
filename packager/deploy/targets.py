"""The deploy target registry: every `--target` by name, with the files it writes for a plan and what it can
honour (a cluster that pulls, autoscaling, a model across nodes, how a shared base reaches its pods). The CLI's
choices and help, the request's checks, the values and the rendering read the entries below.

A new target is its template(s) (packager's templates/, or a folder of its own) and one `register_target(...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from packager.errors import UserInputError
from packager.registry import Registry

PlanFiles = Callable[[Any], tuple[str, ...]]  # the plan -> the file names it writes (each renders FILE.j2)


@dataclass(frozen=True)
class DeployTarget:
    """One place the image is deployed, and what its manifests can do."""

    name: str
    describe: str  # one line for --help
    files: PlanFiles
    cluster: bool  # its nodes pull the image from a registry (a qualified name), not a local engine
    autoscales: bool  # honours --replicas MIN:MAX
    multi_node: bool  # serves a model whose pipeline stages span nodes
    volumes: tuple[str, ...]  # how a shared base may reach its pods; auto: image when pushed, else the next one
    templates: str = ""  # a folder of its own templates, searched before packager's ("": packager's)

    def default_volume(self, has_model_image: bool) -> str:
        """--base-volume auto: the pushed base-model image when there is one, else this target's own way."""
        return "image" if has_model_image and "image" in self.volumes else next(v for v in self.volumes if v != "image")


TARGETS: Registry[DeployTarget] = Registry("deploy target")
register_target = TARGETS.register


def get_target(name: str) -> DeployTarget:
    """The target called `name`; an unknown one is refused naming the registry's."""
    if name not in TARGETS:
        raise UserInputError(f"unknown --target {name!r}; use {', '.join(TARGETS)}")
    return TARGETS[name]


def help_text() -> str:
    """--target's help, from the registry."""
    each = ", ".join(f"{t.name} ({t.describe})" for t in TARGETS.values())
    return f"manifests to write into WORK/deploy (repeat; default: all): {each}; pinned by digest once pushed"


def _kserve_files(plan: Any) -> tuple[str, ...]:
    """The one file KServe gets (one Service per target, nothing to choose between): the LLMInferenceService where
    vLLM serves adapters on a shared base at fixed replicas (routed by adapter) or the model spans nodes, else the
    InferenceService (which autoscales)."""
    image, nodes = plan.image, plan.sizing.nodes if plan.sizing is not None else 1
    routed = image is not None and image.layout == "shared" and image.engine == "vllm" and not plan.deploy.max_replicas
    return ("kserve-llm.yaml",) if routed or nodes > 1 else ("kserve.yaml",)


for _target in (
    DeployTarget("compose", "compose.yaml, one host", lambda _plan: ("compose.yaml",), cluster=False,
                 autoscales=False, multi_node=False, volumes=("image", "bind", "volume")),
    DeployTarget("kubernetes", "Deployment + Service, the base as an ImageVolume or a claim",
                 lambda _plan: ("kubernetes.yaml",), cluster=True, autoscales=True, multi_node=False,
                 volumes=("image", "pvc")),
    DeployTarget("kserve", "an InferenceService, or with vLLM on a shared base an LLMInferenceService",
                 _kserve_files, cluster=True, autoscales=True, multi_node=True, volumes=("image", "pvc")),
):  # fmt: skip
    register_target(_target)
