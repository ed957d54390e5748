"""The one task an image serves: every adapter's, one the images serve, in a layout and with an artefact that
take it; refused in one line otherwise, before any heavy work."""

from __future__ import annotations

from packager.errors import UserInputError
from packager.planning.request import PackageRequest
from packager.quantize.plan import check_quantizable
from packager.resolve.resolver import Resolved
from packager.runtime.config import SERVED_TASKS
from packager.runtime.encoders import PoolingUnsupported, read_pooling
from packager.tasks import ModelTask


def served_task(request: PackageRequest, inputs: tuple[Resolved, ...]) -> ModelTask:
    """The one task every adapter of the image shares, if packager's images serve it; refused in one line else."""
    tasks = {item.plan.task for item in inputs}
    if len({t.name for t in tasks}) > 1:
        names = ", ".join(sorted(t.name for t in tasks))
        raise UserInputError(f"the adapters are for different tasks ({names}); package each task as its own image")
    task = inputs[0].plan.task
    if task.name not in SERVED_TASKS:
        raise UserInputError(
            f"packager merges {task.name} adapters but its images do not serve that task yet; use `packager merge` "
            f"and serve the merged folder yourself, or pass --task with one of {', '.join(SERVED_TASKS)}"
        )
    if request.serving.layout == "shared" and task.name in ("SEQ_CLS", "TOKEN_CLS") and not _all_adapterhub(inputs):
        raise UserInputError(
            f"the shared layout serves {task.name} adapters only as AdapterHub adapters (a PEFT head "
            "needs its own label count at load); use --layout baked"
        )
    if task.name == "FEATURE_EXTRACTION":
        try:
            read_pooling(inputs[0].plan.base.path)  # the server pools as the base's sentence-transformers says
        except PoolingUnsupported as exc:
            raise UserInputError(str(exc)) from None
    check_quantizable(request.artefact.quantize, task.name, "this")
    return task


def _all_adapterhub(inputs: tuple[Resolved, ...]) -> bool:
    """Every adapter is AdapterHub's: each brings its own prediction head, loaded by name beside the others, or
    keeps the base's (job.py's check_shared refuses the rest)."""
    return all(item.plan.adapter.library == "adapters" for item in inputs)
