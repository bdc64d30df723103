"""Run folders at a URI (``s3://``, ``gs://``, ``file://``, any filesystem pyarrow knows, as
Tune's ``storage_path``): a run works in a local staging folder that is synced with the URI.

``spikerl train --out URI`` pulls what the URI already holds (the run's small files and, to
resume, its latest checkpoint), trains in the staging folder, and pushes the small files and
each new checkpoint as they are written; a checkpoint's info file goes last, so a checkpoint
cut short in transfer is never taken for a complete one.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from spikerl_ray.errors import UserError


def is_uri(path: str | Path) -> bool:
    """Whether ``path`` names a URI rather than a local path."""
    return "://" in str(path)


def filesystem(uri: str) -> tuple[Any, str]:
    """The pyarrow filesystem and path of ``uri``; an unknown scheme or unreachable store is
    a :class:`UserError`."""
    import pyarrow
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (pyarrow.ArrowInvalid, OSError) as exc:
        raise UserError(f"cannot use storage URI {uri}: {exc}") from None


class Mirror:
    """A local staging folder for the folder at ``uri``; removed by :meth:`close`."""

    def __init__(self, uri: str) -> None:
        self.fs, self.root = filesystem(uri)
        self.uri = uri
        self.root = self.root.rstrip("/")
        self.local = Path(tempfile.mkdtemp(prefix="spikerl-stage-"))

    def _remote(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def listing(self, rel: str = "", recursive: bool = False) -> list[tuple[str, bool]]:
        """``(path relative to the URI, is a folder)`` under ``rel``; empty if absent."""
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(self._remote(rel), allow_not_found=True,
                                           recursive=recursive)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as exc:
            raise UserError(f"cannot read {self.uri}: {exc}") from None
        return [(info.path[len(self.root) + 1:], info.type == pyarrow.fs.FileType.Directory)
                for info in infos]

    def pull(self, rel: str = "", recursive: bool = False,
             keep: Callable[[str], bool] = lambda rel: True) -> None:
        """Copies the files under ``rel`` (with ``recursive``, in its subfolders too) that
        ``keep`` accepts into the staging folder."""
        for path, is_dir in self.listing(rel, recursive):
            if is_dir or not keep(path):
                continue
            target = self.local / path
            target.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(self._remote(path)) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)

    def push(self, rel: str = "", last: str | None = None) -> None:
        """Copies the staged file or folder ``rel`` (a folder with everything in it) to the
        URI; the file named ``last`` inside it goes after all others."""
        source = self.local / rel
        files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [
            source]
        files.sort(key=lambda p: p.name == last)
        try:
            for path in files:
                remote = self._remote(path.relative_to(self.local).as_posix())
                self.fs.create_dir(remote.rsplit("/", 1)[0], recursive=True)
                with path.open("rb") as src, self.fs.open_output_stream(remote) as dst:
                    shutil.copyfileobj(src, dst)
        except OSError as exc:
            raise UserError(f"cannot write to {self.uri}: {exc}") from None

    def delete(self, names: tuple[str, ...]) -> None:
        """Deletes the files and folders ``names`` directly under the URI, where present."""
        for path, is_dir in self.listing():
            if path not in names:
                continue
            if is_dir:
                self.fs.delete_dir(self._remote(path))
            else:
                self.fs.delete_file(self._remote(path))

    def close(self) -> None:
        shutil.rmtree(self.local, ignore_errors=True)
