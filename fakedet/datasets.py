"""Find labelled images in a folder tree or a .zip archive, check that they decode, report problems.

Layout: the label comes from the nearest enclosing class folder (``real``/``fake`` or
``0_real``/``1_fake``, any case) and the split from the nearest enclosing split folder
(``train``, ``val``/``validation``, ``test``). Only folders *inside* the source count, so the
result does not depend on where the dataset is stored. Zip archives are read in place,
never extracted.
"""
from __future__ import annotations

import hashlib
import os
import re
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from types import MappingProxyType

import pandas as pd
from tqdm import tqdm

from .decoding import describe

LABEL_NAMES = {0: "real", 1: "fake", -1: "unlabelled"}
TINY_SIDE = 8

_CLASS_FOLDERS = {"real": 0, "0_real": 0, "fake": 1, "1_fake": 1}
_SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
_COLUMNS = {
    "id": "str", "path": "str", "split": "str", "label": "int8", "format": "str",
    "width": "int32", "height": "int32", "nbytes": "int64", "error": "str",
}


class UnreadableFile(OSError):
    """A file of the source that the OS or the archive cannot hand over; the message is a short reason."""


class SourceError(ValueError):
    """The dataset as a whole cannot be read (e.g. a zip whose central directory is damaged)."""


class ImageSource:
    """Read files of a dataset given as a folder, a .zip archive or a single image file.

    Paths are POSIX strings relative to the folder, or member names inside the zip. The
    object pickles without its open archive handle and reopens the archive lazily in each
    process, so it can be shared with torch DataLoader workers.
    """

    #: path -> reason, for entries found but not readable as files (filled by ``paths``)
    refused: Mapping[str, str] = MappingProxyType({})

    def __init__(self, source: str | os.PathLike) -> None:
        path = Path(source).resolve()
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {source}")
        self.root = str(path)
        if path.is_dir():
            self.kind, self.name = "folder", path.name
        else:
            self.kind = "zip" if path.suffix.lower() == ".zip" else "file"
            self.name = path.stem
        self._zip: zipfile.ZipFile | None = None
        self._pid: int | None = None

    def __repr__(self) -> str:
        return f"ImageSource({self.root!r}, kind={self.kind!r})"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None, "_pid": None}

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Close the archive handle, if this process opened one."""
        if self._zip is not None and self._pid == os.getpid():
            self._zip.close()
        self._zip = self._pid = None

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():
            # after fork() the inherited handle shares its file offset with the parent
            try:
                self._zip, self._pid = zipfile.ZipFile(self.root), os.getpid()
            except (zipfile.BadZipFile, OSError, EOFError, UnicodeDecodeError, ValueError) as err:
                raise SourceError(
                    f"{self.root} is not a readable zip archive ({err}): its table of contents is missing or "
                    "damaged (a truncated download?); download or create it again, or unpack it and pass the folder"
                ) from None
        return self._zip

    def paths(self) -> list[str]:
        """Sorted paths of all visible regular files (no hidden files/folders, no __MACOSX), including
        entries that cannot be read as files, whose reasons ``refused`` holds: broken symlinks, symlink loops,
        folders that cannot be listed, zip members named outside the archive (``../``, absolute)."""
        self.refused = {}
        if self.kind == "file":
            return [printable(Path(self.root).name)]
        if self.kind == "folder":
            return sorted(_walk(self.root, "", self.refused))
        archive = self._archive()
        for info in archive.infolist():
            if not info.is_dir() and _escapes(info.filename):
                self.refused[info.filename] = "refused: zip member named outside the archive (../ or absolute)"
        return sorted(
            info.filename for info in archive.infolist()
            if not info.is_dir() and (info.filename in self.refused or _visible(info.filename))
            # a name stored twice: keep only the entry that read() returns
            and archive.getinfo(info.filename) is info
        )

    def read(self, path: str) -> bytes:
        """The bytes of one file; FileNotFoundError if the path is not in the source, UnreadableFile (an
        OSError) with a short reason if the OS or the archive cannot hand it over."""
        if self.kind == "zip":
            if _escapes(path):
                raise FileNotFoundError(f"{path!r} is not a path inside {self.root}")
            try:
                return self._archive().read(path)
            except KeyError:
                raise FileNotFoundError(f"{path!r} not in {self.root}") from None
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as err:
                raise UnreadableFile(f"bad zip member: {err}") from None
        if self.kind == "file":
            if path != printable(Path(self.root).name):
                raise FileNotFoundError(f"{path!r} is not {self.root}")
            return _read_file(Path(self.root))
        parts = PurePosixPath(path).parts
        if not parts or PurePosixPath(path).is_absolute() or ".." in parts:
            raise FileNotFoundError(f"{path!r} is not a path inside {self.root}")
        target = Path(self.root, *PurePosixPath(os_name(path)).parts)
        if not os.path.lexists(target):  # a name that really holds the text "\\xff"
            target = Path(self.root, *parts)
        return _read_file(target)

    def label_and_split(self, path: str) -> tuple[int, str]:
        """Label and split of one path (here from its folders; other sources read them from metadata)."""
        return label_and_split(path)


def open_source(source: str | os.PathLike | ImageSource) -> ImageSource:
    """An ImageSource for a folder, a .zip archive or a single image file, or for WebDataset shards,
    a manifest table or a URL (see ``fakedet.sources``)."""
    if isinstance(source, ImageSource):
        return source
    from .sources import open_extra

    return open_extra(source) or ImageSource(source)


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as err:  # permission, symlink loop, I/O error of a disk or network file system
        raise UnreadableFile(f"read error: {err.strerror or err}") from None


def _visible(name: str) -> bool:
    parts = [p for p in re.split(r"[\\/]", name) if p not in ("", ".")]
    return not any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _escapes(name: str) -> bool:
    """A zip member name that would land outside the archive's folder: absolute, a drive, or with ``..``."""
    return bool(re.match(r"^([\\/]|[A-Za-z]:)", name)) or ".." in re.split(r"[\\/]", name)


def _walk(folder: str, prefix: str, refused: dict[str, str]):
    """Paths of the regular files under ``folder``; entries that cannot be read go to ``refused``."""
    try:
        with os.scandir(folder) as listing:
            entries = list(listing)
    except OSError as err:
        refused[prefix or "./"] = f"cannot list folder: {err.strerror or err}"
        yield prefix or "./"
        return
    for entry in entries:
        if entry.name.startswith(".") or entry.name == "__MACOSX":
            continue
        path = prefix + printable(entry.name)
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(entry.path, f"{path}/", refused)
            elif entry.is_file():
                yield path
            elif entry.is_symlink():
                refused[path] = "broken symlink (its target does not exist)"
                yield path
        except OSError as err:  # e.g. a symlink loop
            refused[path] = f"read error: {err.strerror or err}"
            yield path


def printable(name) -> str:
    """A file name as valid Unicode, the form tables and reports hold: bytes that are not UTF-8 (which
    Python keeps as surrogate escapes) are written ``\\xff``. ``os_name`` reverses it."""
    return str(name).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def os_name(path: str) -> str:
    """The OS file name (with surrogate escapes) of a ``printable`` name."""
    return re.sub(r"\\x([89a-f][0-9a-f])", lambda m: chr(0xDC00 + int(m.group(1), 16)), path)


def label_and_split(path: str) -> tuple[int, str]:
    """Label (0 real, 1 fake, -1 unknown) and split ("" if none) from the folders of a path."""
    folders = [p.lower() for p in re.split(r"[\\/]", path)[:-1]]
    label = next((_CLASS_FOLDERS[p] for p in reversed(folders) if p in _CLASS_FOLDERS), -1)
    split = next((_SPLIT_FOLDERS[p] for p in reversed(folders) if p in _SPLIT_FOLDERS), "")
    return label, split


def content_id(data: bytes) -> str:
    """Content id of file bytes: 32 hex characters of blake2b (16-byte digest)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _table(source: str | os.PathLike | ImageSource, progress: bool, decode: bool) -> pd.DataFrame:
    src = open_source(source)
    paths = src.paths()
    rows = []
    for path in tqdm(paths, desc=f"{'scan' if decode else 'discover'} {src.name}",
                     unit="file", disable=not progress):
        label, split = src.label_and_split(path)
        try:
            if path in src.refused:
                raise UnreadableFile(src.refused[path])
            data = src.read(path)
        except OSError as err:  # no bytes: the id is made from the path, so each such file has its own
            rows.append((content_id(b"unreadable:" + path.encode("utf-8", "surrogateescape")), path, split, label,
                         "", -1, -1, 0, str(err)))
            continue
        fmt, width, height, error = describe(data, decode)
        rows.append((content_id(data), path, split, label, fmt, width, height, len(data), error))
    return pd.DataFrame(rows, columns=list(_COLUMNS)).astype(_COLUMNS)


def discover(source: str | os.PathLike | ImageSource, progress: bool = True) -> pd.DataFrame:
    """One row per file of a folder, zip archive or single image, sorted by path.

    Columns: id (content hash), path, split, label (int8), format, width, height (int32,
    -1 if unreadable), nbytes (int64) and error ("" when the image header parsed).
    Only headers are parsed; use :func:`scan` to find files that fail to decode.
    """
    return _table(source, progress, decode=False)


def duplicates(frame: pd.DataFrame) -> pd.DataFrame:
    """Groups of rows sharing a content id, in order of their first path.

    Columns: id, n, paths, labels, splits (lists in row order), conflict (copies labelled
    both real and fake) and cross_split (copies in more than one named split).
    """
    repeated = frame[frame["id"].duplicated(keep=False)]
    groups = (
        repeated.groupby("id", sort=False)
        .agg(paths=("path", list), labels=("label", list), splits=("split", list))
        .reset_index()
    )
    groups.insert(1, "n", groups["paths"].map(len).astype("int64"))
    groups["conflict"] = groups["labels"].map(lambda v: len({x for x in v if x >= 0}) > 1)
    groups["cross_split"] = groups["splits"].map(lambda v: len({x for x in v if x}) > 1)
    return groups.astype({"conflict": bool, "cross_split": bool})


def scan(source: str | os.PathLike | ImageSource, progress: bool = True) -> pd.DataFrame:
    """Problems found by fully decoding every file, one row per (file, problem).

    Columns path, id, problem, detail. Problems: "unreadable" (empty, not an image,
    truncated or corrupt, decompression bomb), "tiny image" (a side < 8 px), "duplicate"
    (same bytes as an earlier path), "label conflict" (a copy labelled otherwise than the
    first labelled copy) and "cross-split duplicate" (a copy in another split than the
    first copy in a named split).
    """
    frame = _table(source, progress, decode=True)
    problems = [
        (row.path, row.id, "unreadable", row.error)
        for row in frame[frame["error"] != ""].itertuples()
    ]
    tiny = frame[(frame["error"] == "") & (frame[["width", "height"]].min(axis=1) < TINY_SIDE)]
    problems += [
        (row.path, row.id, "tiny image", f"{row.width} x {row.height} pixels")
        for row in tiny.itertuples()
    ]
    for group in duplicates(frame).itertuples():
        copies = list(zip(group.paths, group.labels, group.splits))
        labelled = next(((p, x) for p, x, _ in copies if x >= 0), None)
        in_split = next(((p, s) for p, _, s in copies if s), None)
        for path, label, split in copies[1:]:
            problems.append((path, group.id, "duplicate", f"same bytes as {group.paths[0]}"))
            if group.conflict and label >= 0 and label != labelled[1]:
                problems.append((path, group.id, "label conflict",
                                 f"{LABEL_NAMES[label]} here, {LABEL_NAMES[labelled[1]]} "
                                 f"as {labelled[0]}"))
            if group.cross_split and split and split != in_split[1]:
                problems.append((path, group.id, "cross-split duplicate",
                                 f"in {split} here, in {in_split[1]} as {in_split[0]}"))
    table = pd.DataFrame(problems, columns=["path", "id", "problem", "detail"], dtype="str")
    return table.sort_values(["path", "problem"], kind="stable", ignore_index=True)
