"""How a class's parameter names meet the names a checkpoint stores: transformers' renames on load (a class's
`_checkpoint_conversion_mapping`) and its base-model prefix (`bert.`, `model.`), done here as transformers does
them, so the merged files keep the base's own layout and load in the plan's class."""

from __future__ import annotations

import re

from packager.architecture.inspect import Architecture
from packager.architecture.weights import BaseWeights


def stored_names(arch: Architecture, weights: BaseWeights) -> dict[str, str]:
    """The class's name for each stored tensor that transformers renames on load -> the stored name
    (e.g. LLaVA's `language_model.model.layers...` is the class's `model.language_model.layers...`)."""
    renamed = {}
    for stored in weights.tensors if arch.key_mapping else ():
        for pattern, replacement in arch.key_mapping:
            name, count = re.subn(pattern, replacement, stored)
            if count:
                renamed[name] = stored
                break
    return renamed


def output_prefix(arch: Architecture, weights: BaseWeights, new_tensors: dict) -> str:
    """The prefix to write every base tensor under: a base saved without it (a bare BertModel) gets it when the
    task's class adds a head from the adapter beside it, since transformers then adds the prefix to every key."""
    prefix = arch.base_prefix
    if not (prefix and any(source == "adapter" for source, *_ in new_tensors.values())):
        return ""
    return "" if any(name.startswith(prefix + ".") for name in weights.tensors) else prefix
