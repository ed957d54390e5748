"""What the main commands print on stderr is packager's own: progress lines it writes, never a third-party
library's warnings or progress bars (issue 18: bitsandbytes' kernel notice once came before the plan)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

PACKAGER_LINE = re.compile(r"^(merge|quantize|calibrate|measure|export|resolve|render|package): ")


@pytest.fixture(scope="module")
def demo(demo_adapter) -> str:
    return demo_adapter


def _stderr(*args: str, code: int = 0) -> list[str]:
    quiet = ("TRANSFORMERS_VERBOSITY", "TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")  # as a user's shell has them
    env = {**{k: v for k, v in os.environ.items() if k not in quiet}, "HF_HUB_OFFLINE": "1"}
    packager = os.path.join(os.path.dirname(sys.executable), "packager")  # the console script users run
    done = subprocess.run([packager, *args], capture_output=True, text=True, env=env)
    assert done.returncode == code, done.stderr
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


def test_every_other_command_prints_only_packagers_lines(demo, tmp_path) -> None:
    """demo, resolve, verify, quantize and package-base --dry-run: nothing but packager's lines (issue 24: the
    bitsandbytes kernel notice on `demo`, transformers' torch_dtype deprecation before an error, compressed-tensors'
    progress bars)."""
    merged = tmp_path / "merged"
    assert _stderr("merge", "--adapter", demo, "--output", str(merged), "--quiet") == []
    assert _stderr("demo", "--output", str(tmp_path / "demo")) == []
    assert _stderr("resolve", "--adapter", demo, "--lock", str(tmp_path / "lock.json")) == []
    assert _stderr("verify", "--adapter", demo, "--merged", str(merged)) == []
    quantized = _stderr("quantize", "--model", str(merged), "--quantize", "w8a8", "--output", str(tmp_path / "q"))
    assert all(PACKAGER_LINE.match(line) for line in quantized), quantized
    assert _stderr("package-base", "--base", str(merged), "--dry-run", "--work", str(tmp_path / "w")) == []


@pytest.mark.parametrize(
    "command",
    [
        ["package", "--layout", "baked", "--dry-run", "--base", "/no/such/base"],
        ["package", "--layout", "baked", "--dry-run", "--device", "cpu", "--quantize", "bnb-nf4"],
        ["merge", "--base", "/no/such/base", "--output", "{tmp}/out"],
        ["resolve", "--task", "NOT_A_TASK"],
        ["build", "{tmp}"],
    ],
    ids=lambda c: " ".join(c),
)
def test_every_error_is_one_line_and_nothing_else(demo, tmp_path, command) -> None:
    argv = [part.replace("{tmp}", str(tmp_path)) for part in command]
    if argv[0] != "build":
        argv += ["--adapter", demo]
    lines = _stderr(*argv, code=2)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
