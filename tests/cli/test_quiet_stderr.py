"""What the main commands print on stderr is packager's own: progress lines it writes, never a third-party
library's warnings or progress bars (issue 18: bitsandbytes' kernel notice once came before the plan)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from packager.demo import build_demo

PACKAGER_LINE = re.compile(r"^(merge|quantize|calibrate|measure|export|resolve|render|package): ")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> str:
    _base, adapter = build_demo(str(tmp_path_factory.mktemp("quiet") / "demo"))
    return adapter


def _stderr(*args: str) -> list[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    packager = os.path.join(os.path.dirname(sys.executable), "packager")  # the console script users run
    done = subprocess.run([packager, *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "command",
    [
        ["package", "--layout", "baked", "--dry-run"],
        ["package", "--layout", "shared", "--dry-run", "--json"],
        ["render", "--layout", "shared"],
        ["merge"],
        ["merge", "--quantize", "w8a8"],
    ],
    ids=lambda c: " ".join(c),
)
def test_the_main_commands_print_only_packagers_lines_on_stderr(demo, tmp_path, command) -> None:
    where = ["--output", str(tmp_path / "out")] if command[0] == "merge" else ["--work", str(tmp_path / "w")]
    image = [] if command[0] == "merge" else ["--base-image", "packager-runtime:x"]
    lines = _stderr(*command, "--adapter", demo, *where, *image)
    assert all(PACKAGER_LINE.match(line) for line in lines), lines
    assert command[0] != "merge" or lines  # the merge does report its progress there
