"""Validation and quoting filters for every user value that reaches a template.

A value either passes a strict pattern or is quoted for its target syntax; nothing a user types can add
a Dockerfile instruction or a YAML key.
"""

from __future__ import annotations

import json
import re

from packager.errors import UserInputError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REF = re.compile(
    rf"^(?:(?:[a-zA-Z0-9-]+\.)*[a-zA-Z0-9-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LABEL_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*[a-z0-9]$")
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/ +@-]*$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _matching(pattern: re.Pattern[str], value: str, refusal: str) -> str:
    """`value` when `pattern` matches all of it; else the one-line refusal."""
    if not pattern.fullmatch(value or ""):
        raise UserInputError(f"{value!r} {refusal}")
    return value


def image_ref(value: str) -> str:
    """A container image reference such as `registry:5000/team/model:1.0`; anything else is refused."""
    refusal = "is not a valid image reference; use [registry[:port]/]name[:tag] in lowercase, e.g. acme/model:1"
    return _matching(IMAGE_REF, value, refusal)


def safe_name(value: str) -> str:
    """A file, adapter or service name: letters, digits, dot, dash, underscore; no path separators."""
    if not SAFE_NAME.fullmatch(value or "") or value in (".", ".."):
        raise UserInputError(f"{value!r} is not a valid name; use letters, digits, '.', '-' and '_' only")
    return value


def label_key(value: str) -> str:
    """An image label key: lowercase letters, digits, '.', '-' and '_'; anything else is refused."""
    return _matching(LABEL_KEY, value, "is not a valid label key; use lowercase letters, digits, '.', '-', '_'")


def _one_line(value: object) -> str:
    """`value` as text, refused when it holds a newline or another control character."""
    text = str(value)
    if CONTROL.search(text):
        raise UserInputError(f"{text!r} contains a newline or control character; remove it")
    return text


def dockerfile_string(value: object) -> str:
    """A double-quoted Dockerfile string: no control characters; backslash, quote and $ escaped."""
    text = _one_line(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def yaml_string(value: object) -> str:
    """A YAML (JSON-compatible) double-quoted string; `$` doubled so compose does not interpolate it."""
    text = _one_line(value)
    return json.dumps(text.replace("$", "$$"))


def compose_path(value: str) -> str:
    """An absolute host path used inside a quoted compose string."""
    refusal = "cannot be used as the base path in compose.yaml; use an absolute path without quotes, $ or braces"
    return _matching(SAFE_PATH, value, refusal)


PIP_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!-]*$")


def pip_pin(value: str) -> str:
    """An exact pip requirement, `name==version`: nothing else reaches a RUN line."""
    if not PIP_PIN.fullmatch(value):
        raise UserInputError(f"invalid pip requirement {value!r}; give it as name==version")
    return value


DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def dns_label(value: str) -> str:
    """A Kubernetes object name (RFC 1123 label): lowercase letters, digits and '-', at most 63 characters."""
    refusal = "is not a valid Kubernetes name; use lowercase letters, digits and '-' (at most 63)"
    return _matching(DNS_LABEL, value, refusal)


def json_string(value: object) -> str:
    """A YAML double-quoted (JSON) string for Kubernetes manifests: no control characters; nothing doubled
    (Kubernetes does not interpolate `$` outside `$(VAR)` in env values, which packager never writes)."""
    text = _one_line(value)
    return json.dumps(text)


def json_text(value: str) -> str:
    """Text of several lines (a PEM key, a signature bundle) as one YAML double-quoted (JSON) string: newlines and
    every control character escaped, so nothing can end the string or start a key."""
    return json.dumps(str(value))


RELATIVE_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(?:/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")


def relative_path(value: str) -> str:
    """A model file's path inside its folder (`config.json`, `1_Pooling/config.json`): no `..`, no leading `/`,
    nothing a JSON COPY line or a YAML key could be broken out of."""
    if not RELATIVE_PATH.fullmatch(value or "") or ".." in value.split("/"):
        raise UserInputError(f"{value!r} is not a plain relative file path; rename the file")
    return value


FILTERS = {
    "image_ref": image_ref,
    "safe_name": safe_name,
    "label_key": label_key,
    "dockerfile_string": dockerfile_string,
    "yaml_string": yaml_string,
    "compose_path": compose_path,
    "pip_pin": pip_pin,
    "relative_path": relative_path,
    "dns_label": dns_label,
    "json_string": json_string,
    "json_text": json_text,
}
