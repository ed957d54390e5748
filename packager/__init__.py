"""packager: turn a fine-tuned LLM adapter into a container that serves it."""

__version__ = "0.1.0"
