"""A test-only quantization scheme, builder and deploy target, each one registry entry (plus, for the builder, its
class here, and for the target, its template in tests/extension_templates): what a contributor adds. Registered
for a test by `registered()`, and gone after it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from packager.builders import BUILDERS, BuilderEntry, register_builder
from packager.builders.oci import OciBuilder
from packager.deploy.targets import TARGETS, DeployTarget, register_target
from packager.quantize.schemes import SCHEMES, Scheme, register_scheme

SCHEME = Scheme(
    "w8a16-g64", "streamed", "int8 in groups of 64 input columns (a test entry)", "16-bit", 1 + 2 / 64,
    devices=("cpu", "cuda"), lora_devices=("cuda",), preset="W8A16", grouped=True, calibrates=True,
)  # fmt: skip
BUILDER = BuilderEntry(
    "oci-test", "tests.extensions:OciTestBuilder", "the oci builder under a test entry's name", reproducible=True,
    local_image=False,
)  # fmt: skip
TARGET = DeployTarget(
    "nomad", "a Nomad job (a test entry)", lambda _plan: ("nomad.hcl",), cluster=True, autoscales=False,
    multi_node=False, volumes=("image",), templates=os.path.join(os.path.dirname(__file__), "extension_templates"),
)  # fmt: skip


class OciTestBuilder(OciBuilder):
    """The oci builder, named as the test entry (what a build reports)."""

    name = BUILDER.name


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """The three entries in their registries for the duration, through the registries' own functions."""
    register_scheme(SCHEME)
    register_builder(BUILDER)
    register_target(TARGET)
    try:
        yield
    finally:
        del SCHEMES[SCHEME.name], BUILDERS[BUILDER.name], TARGETS[TARGET.name]
