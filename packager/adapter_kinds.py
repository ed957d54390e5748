"""Adapter methods packager serves unmerged (nothing to merge), by the library that serves them."""

# PEFT methods that add virtual tokens (or prefix keys and values) instead of changing weights: nothing to merge,
# so they are served unmerged, by PEFT, in packager's server
PROMPT_LEARNING_TYPES = frozenset(
    {"PROMPT_TUNING", "MULTITASK_PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "ADAPTION_PROMPT", "CPT"}
)
# AdapterHub methods that change the forward pass (bottleneck, prefix tuning, heads...): served by `adapters`
ADAPTERHUB_TYPE = "ADAPTERHUB"
UNMERGED_TYPES = PROMPT_LEARNING_TYPES | {ADAPTERHUB_TYPE}
