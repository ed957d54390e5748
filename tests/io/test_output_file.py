"""OutputFile: O_DIRECT through an aligned bounce buffer, or the page cache, must give the same bytes."""

from __future__ import annotations

import errno
import os
import sys

import pytest
import torch

from packager.io import output_file
from packager.io.output_file import BLOCK, OutputFile


def _pieces() -> list[torch.Tensor]:
    """Odd sizes that cross the bounce buffer's edges, and a tail that is not a multiple of 4096."""
    generator = torch.Generator().manual_seed(0)
    sizes = [8 + 123, BLOCK - 131, 1, 2 * BLOCK + 7, 4095, 0, 5000]
    return [torch.randint(0, 256, (n,), dtype=torch.uint8, generator=generator) for n in sizes]


@pytest.mark.parametrize("direct", [True, False])
def test_written_bytes_are_the_stream(direct, tmp_path) -> None:
    path = str(tmp_path / "out.bin")
    pieces = _pieces()
    out = OutputFile(path, direct=direct)
    for piece in pieces:
        out.write(piece)
    out.close()
    expected = torch.cat(pieces).numpy().tobytes()
    with open(path, "rb") as f:
        assert f.read() == expected
    assert os.path.getsize(path) == len(expected)


LINUX_ONLY = pytest.mark.skipif(
    sys.platform != "linux", reason="O_DIRECT is a Linux open flag (macOS has none, so the buffered path runs there)"
)


@LINUX_ONLY
def test_direct_io_is_used_on_this_filesystem(tmp_path) -> None:
    """The speed-up depends on it; ext4 (the test machine's disk) accepts O_DIRECT."""
    assert output_file.O_DIRECT
    out = OutputFile(str(tmp_path / "out.bin"))
    out.write(torch.ones(BLOCK + 1, dtype=torch.uint8))
    assert out.direct
    out.close()


@LINUX_ONLY
def test_a_filesystem_refusing_direct_writes_falls_back_to_the_page_cache(tmp_path, monkeypatch) -> None:
    """Simulated: no filesystem here opens with O_DIRECT and then refuses the write (some network ones do), so
    os.write raises EINVAL once while the file is in direct mode."""
    real_write = os.write
    refused = []

    def write(fd: int, data) -> int:
        if fcntl_flags(fd) & output_file.O_DIRECT:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(output_file.os, "write", write)
    path = str(tmp_path / "out.bin")
    pieces = _pieces()
    out = OutputFile(path)
    for piece in pieces:
        out.write(piece)
    out.close()
    assert refused and not out.direct
    with open(path, "rb") as f:
        assert f.read() == torch.cat(pieces).numpy().tobytes()


def fcntl_flags(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETFL)
