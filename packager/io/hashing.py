"""sha256 of files, remembered per (device, inode, size, mtime) so a re-run does not re-read gigabytes.

Files can also be hashed ahead on a background thread (`hash_ahead`): the CLI starts it while torch is still
being imported, which keeps one of two cores busy for about a second, so the merge that follows does
not have to hash what it reads. Torch-free on purpose.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from packager.errors import UserInputError

CHUNK = 64 << 20  # big reads: a background hashing thread gives the GIL back less often while torch imports

Stamped = tuple[str, str] | None  # (file identity when hashed, sha256), None when the file changed while hashed


def cache_root() -> str:
    """packager's cache folder: env PACKAGER_CACHE, else ~/.cache/packager."""
    return os.environ.get("PACKAGER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "packager")


def _cache_path() -> str:
    return os.path.join(cache_root(), "sha256.json")


def _stamp(path: str) -> str:
    return _format_stamp(os.stat(path))  # identity survives a rename (staging folder -> output)


def _format_stamp(st: os.stat_result) -> str:
    return f"{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}"


def _load() -> dict[str, str]:
    try:
        with open(_cache_path()) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


_remembering = threading.Lock()  # files hashed on several threads: one read-modify-write of the cache at a time


def remember(path: str, digest: str) -> None:
    """Record a digest computed elsewhere (e.g. while streaming the file)."""
    with _remembering:
        cache = _load()
        cache[_stamp(path)] = digest
        target = _cache_path()
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target))
        with os.fdopen(fd, "w") as f:
            json.dump(cache, f)
        os.replace(tmp, target)


def cached_sha256(path: str) -> str | None:
    """The file's remembered sha256 when it is unchanged since it was hashed, else None."""
    return _load().get(_stamp(path))


def known_sha256(path: str) -> str | None:
    """The file's sha256 where it is known without reading it: remembered, or a Hugging Face blob's name."""
    return cached_sha256(path) or _hf_blob_digest(path)


def sha256_files(paths: list[str], workers: int | None = None) -> list[str]:
    """Each file's sha256 (`sha256_file`), several files at once on every core: hashlib and the reads release
    the GIL, so threads scale until the disk does (bench/pinning.py measures it against sha256sum)."""
    if len(paths) < 2:
        return [sha256_file(path) for path in paths]
    with ThreadPoolExecutor(max_workers=workers or min(len(paths), os.cpu_count() or 1)) as pool:
        return list(pool.map(sha256_file, paths))


def sha256_file(path: str) -> str:
    """The file's sha256, from the cache when the file is unchanged; a Hugging Face cache blob is named by it."""
    pending = claim(path)
    return settle(path, pending) if pending is not None else _hash_now(path)


def claim(path: str) -> Future[Stamped] | None:
    """Whoever is about to read `path` asks here first: a (possibly still running) digest when the cache, a
    Hugging Face blob name or the background hasher has one, else None, and then the caller hashes the file
    itself (the background hasher will not start it any more)."""
    known = known_sha256(path)
    if known:
        done: Future[Stamped] = Future()
        done.set_result((_stamp(path), known))
        return done
    return _ahead.claim(path) if _ahead is not None else None


def settle(path: str, pending: Future[Stamped]) -> str:
    """The digest `pending` found, if the file is still the one it hashed; otherwise hash the file now."""
    result = pending.result()
    if result is not None and result[0] == _stamp(path):
        return result[1]
    return _hash_now(path)


def _hash_now(path: str) -> str:
    hashed = _hash_stamped(path)
    if hashed is None:
        raise UserInputError(f"{path} changed while packager read it; run again once nothing writes to it")
    remember(path, hashed[1])
    return hashed[1]


class AheadHasher:
    """Hashes files in order on one daemon thread while the caller does other work.

    A reader claims each file when it reaches it (`claim`): a file already started comes back as a future, any
    other is left to the reader. The thread never starts a file more than `lead` files past the last one
    claimed, so a model bigger than the page cache is not read from disk twice.
    """

    def __init__(self, paths: list[str], lead: int = 2) -> None:
        self._order = [os.path.realpath(p) for p in paths]
        self._lead = lead
        self._last_claimed = -1
        self._left_to_reader: set[str] = set()
        self._futures: dict[str, Future[Stamped]] = {}
        self._closed = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="packager-hash-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for index, path in enumerate(self._order):
            with self._condition:
                self._condition.wait_for(lambda i=index: self._closed or self._last_claimed >= i - self._lead)
                if self._closed:
                    return
                if path in self._left_to_reader:
                    continue
                future: Future[Stamped] = Future()
                self._futures[path] = future
            try:
                future.set_result(_hash_stamped(path))
            except OSError:  # gone or unreadable: whoever claims it hashes it and reports the problem
                future.set_result(None)

    def started(self) -> list[str]:
        """The (real) paths the thread has started hashing, in order."""
        with self._condition:
            return list(self._futures)

    def finished(self) -> list[str]:
        """The (real) paths the thread has finished hashing."""
        with self._condition:
            return [path for path, future in self._futures.items() if future.done()]

    def claim(self, path: str) -> Future[Stamped] | None:
        """The reader has reached `path`: its future when hashing has started, else None (the thread then skips it)."""
        real = os.path.realpath(path)
        with self._condition:
            if real in self._order:
                self._last_claimed = max(self._last_claimed, self._order.index(real))
                self._condition.notify_all()
            future = self._futures.get(real)
            if future is None:
                self._left_to_reader.add(real)
            return future

    def close(self) -> None:
        """Start nothing new (a file being hashed finishes on the daemon thread)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()


_ahead: AheadHasher | None = None


def hash_ahead(paths: list[str], lead: int = 2) -> AheadHasher | None:
    """Start hashing `paths` in the background for this process's later `claim`s (replacing an earlier start)."""
    global _ahead
    stop_hashing_ahead()
    _ahead = AheadHasher(paths, lead) if paths else None
    return _ahead


def stop_hashing_ahead() -> None:
    """Stop the background hasher, if any (a file being hashed still finishes)."""
    global _ahead
    if _ahead is not None:
        _ahead.close()
    _ahead = None


def _hash_stamped(path: str) -> Stamped:
    """sha256 of a file with its identity, or None when the file changed while being read."""
    with open(path, "rb", buffering=0) as f:
        stat = os.fstat(f.fileno())
        before = _format_stamp(stat)
        digest, buffer = hashlib.sha256(), bytearray(max(1, min(CHUNK, stat.st_size)))
        view = memoryview(buffer)
        while n := f.readinto(buffer):
            digest.update(view[:n])
        after = _format_stamp(os.fstat(f.fileno()))
    return (before, digest.hexdigest()) if before == after else None


def _hf_blob_digest(path: str) -> str | None:
    """Hub LFS files sit in the cache as blobs/<sha256>; trust the name only for such blobs."""
    real = os.path.realpath(path)
    name = os.path.basename(real)
    parent = os.path.basename(os.path.dirname(real))
    if parent == "blobs" and len(name) == 64 and all(c in "0123456789abcdef" for c in name):
        return name
    return None
