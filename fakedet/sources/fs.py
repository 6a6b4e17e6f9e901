"""fsspec access shared by the sources: one filesystem object per location, picklable."""
from __future__ import annotations

import posixpath

import fsspec


def resolve(location: str) -> tuple[fsspec.AbstractFileSystem, str, str]:
    """(filesystem, path on it, root) for a local path or URL; root is what the store records."""
    try:
        fs, path = fsspec.core.url_to_fs(location)
    except ImportError as err:  # e.g. s3:// without s3fs
        raise ValueError(f"cannot read {location}: {err} (pip install the fsspec driver it names)") from None
    except ValueError as err:  # an unknown protocol
        raise ValueError(f"cannot read {location}: {err}; use a local path or an fsspec URL "
                         "(s3://, gs://, https://, file://)") from None
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    local = protocol in ("file", "local") and "://" not in location
    root = path if local else fs.unstrip_protocol(path)
    return fs, path.rstrip("/") or path, root


def join(base: str, relative: str) -> str:
    return posixpath.join(base, relative) if base else relative


def stem(path: str) -> str:
    """File or folder name without its last suffix: the dataset name."""
    name = posixpath.basename(path.rstrip("/"))
    return name.rsplit(".", 1)[0] if "." in name[1:] else name
