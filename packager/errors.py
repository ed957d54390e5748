"""Error hierarchy: every message names the problem and the fix, on one line."""

from __future__ import annotations


class PackagerError(Exception):
    """Base class. `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        """The message, whitespace collapsed onto one line (as the CLI prints it)."""
        return str(self)


class UserInputError(PackagerError):
    """The user's input is wrong; the message says how to fix it (exit 2)."""

    exit_code = 2


class AdapterError(UserInputError):
    """The adapter folder, its config or its weights are unusable."""


class BaseNotFoundError(UserInputError):
    """The base model could not be located."""


class IncompatibleAdapterError(UserInputError):
    """The adapter does not fit the base model."""


class UnsafeFormatError(UserInputError):
    """Pickle weights were found and not explicitly allowed."""


class CorruptFileError(UserInputError):
    """A weights file is truncated or malformed."""


class OutputError(UserInputError):
    """The output location is unusable (exists, no space, ...)."""


class ParityError(PackagerError):
    """The merged model does not answer like base + adapter."""


class ValidationError(PackagerError):
    """An exported or quantized artefact does not answer like the model it was made from."""


class EngineError(PackagerError):
    """The container engine is unreachable or a build failed."""


class RegistryError(PackagerError):
    """A push failed for a reason other than the user's input (after retries)."""


class RegistryAuthError(UserInputError):
    """The registry refused the credentials."""


class VerificationError(PackagerError):
    """An image, or what is attached to it, differs from what was signed (exit 1; the message names what)."""
