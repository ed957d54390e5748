"""Python libraries only some images need (the `adapters` library, for AdapterHub adapters served unmerged): pinned
here and in pyproject's extras, and copied from this environment's installed distribution into the build context
(LIBRARY_DIR in the image, on its PYTHONPATH), so no image build needs a package index and no image carries them
without a reason. Pure-Python distributions only: their files run on any CPython the image has."""

from __future__ import annotations

import importlib.metadata
import os

from packager.errors import UserInputError
from packager.image.paths import RUNTIME_ROOT

LIBRARY_DIR = f"{RUNTIME_ROOT}/lib"
PINS = {"adapters": "1.3.0"}  # pyproject's `adapterhub` extra; tests/image/test_libraries.py keeps them equal
EXTRAS = {"adapters": "adapterhub"}


def requirement(name: str) -> str:
    """`name==version`, the pin the image gets."""
    return f"{name}=={PINS[name]}"


def check_installed(name: str, why: str) -> None:
    """Refuse, in one line, a plan whose image needs library `name` when this environment lacks its pinned version
    (the files are copied from here)."""
    try:
        found = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        found = None
    if found != PINS[name]:
        has = f"has {name} {found}" if found else f"lacks {name}"
        raise UserInputError(
            f"{why} needs the `{name}` library {PINS[name]} in the image, copied from this environment, which {has}; "
            f"pip install 'packager[{EXTRAS[name]}]' (or {requirement(name)})"
        )


def library_files(name: str) -> list[tuple[str, str]]:
    """(installed file, path under LIBRARY_DIR) for each file of the installed distribution, bytecode left out."""
    check_installed(name, f"the image's {name} library")
    dist = importlib.metadata.distribution(name)
    files = []
    for item in dist.files or ():
        relative = str(item)
        if relative.startswith("..") or "__pycache__" in relative or relative.endswith(".pyc"):
            continue  # console scripts outside site-packages, and bytecode the image compiles itself
        source = str(dist.locate_file(item))
        if os.path.isfile(source):
            files.append((source, relative))
    return sorted(files, key=lambda pair: pair[1])
