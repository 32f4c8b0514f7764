"""Atomic file writing: a crash or a kill mid-write never leaves a half-written file.

The data goes to a temporary file in the destination's folder, is flushed and fsync'ed,
then renamed over the destination with :func:`os.replace`, which is atomic on POSIX and
Windows. A reader therefore sees either the old complete file or the new complete file.

Replacing a file keeps its permission bits, as writing it in place with ``open(path, "w")``
would: a private 0600 file stays private. A symlink at ``path`` is replaced by the new file
(its target is left untouched), since :func:`os.replace` renames over the link itself.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    """The permission bits the written file gets: an existing regular file's own, else what
    an ordinary ``open()`` would create (0666 minus the umask)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        return stat.S_IMODE(st.st_mode)
    return 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left untouched.

    >>> with atomic_path("model.safetensors") as tmp:   # doctest: +SKIP
    ...     save_file(tensors, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:  # make the bytes durable before the rename
            os.fsync(f.fileno())
        # mkstemp creates files readable by the owner only; give the result the mode an
        # ordinary open() would (the replaced file's, else 0666 minus the umask), so shipped
        # assets stay readable and private files stay private.
        os.chmod(tmp_path, _mode_for(path))
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
