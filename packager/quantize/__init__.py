"""Quantize merged weights into compressed-tensors checkpoints (what vLLM, SGLang and transformers load), tensor by
tensor as they stream out of the merge, and measure what it cost in accuracy."""
