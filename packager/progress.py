"""Progress for long steps: a bar on a terminal, one plain line per unit of work otherwise."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator


class Progress:
    """Tracks bytes done for one file at a time; quiet=True prints nothing."""

    def __init__(self, step: str, quiet: bool = False) -> None:
        self.step = step
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._bar = None
        self._started = 0.0

    def start(self, label: str, total_bytes: int) -> None:
        """Begin a unit of work of `total_bytes`: a tqdm bar on a terminal, one plain line otherwise."""
        self._started = time.monotonic()
        self._label = label
        if self.quiet:
            return
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc=f"{self.step} {label}", leave=False,
                             disable=False)  # fmt: skip  # the libraries' bars are off (TQDM_DISABLE), not packager's
        else:
            print(f"{self.step}: {label} ({total_bytes / 1e9:.2f} GB) ...", file=sys.stderr, flush=True)

    def advance(self, nbytes: int) -> None:
        """Move the bar on by `nbytes` (nothing to do without a terminal)."""
        if self._bar is not None:
            self._bar.update(nbytes)

    def finish(self) -> None:
        """Close the bar and print how long the current unit took."""
        elapsed = time.monotonic() - self._started
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if not self.quiet:
            print(f"{self.step}: {self._label} done in {elapsed:.1f}s", file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        """Print a one-line message for this step, unless quiet."""
        if not self.quiet:
            print(f"{self.step}: {message}", file=sys.stderr, flush=True)


class Phases:
    """Times named steps of one job and says what is happening ("export: validating ...")."""

    def __init__(self, step: str, log: Callable[[str], None]) -> None:
        self.step, self.log = step, log
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, message: str) -> Iterator[None]:
        self.log(f"{self.step}: {message} ...")
        started = time.monotonic()
        yield
        self.seconds[name] = round(time.monotonic() - started, 3)

    @property
    def total(self) -> float:
        """Seconds spent in all the steps timed so far."""
        return sum(self.seconds.values())
