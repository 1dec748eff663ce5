"""Model files: safetensors weights plus a JSON metadata object, written atomically.

This module is the one place in gatescope that reads or writes model files. It never uses
pickle, and loading never executes code: a checkpoint is parsed as bytes and JSON only.

File layout (a plain ``.safetensors`` file, readable by any safetensors reader)::

    8-byte little-endian u64 N | N bytes of JSON header | raw tensor bytes
    header["__metadata__"] = {"format_version": "2", "gatescope": "<meta as one JSON string>"}

The ``gatescope`` string holds the caller's ``meta`` dict plus two keys added on save:
``format_version`` (int, :data:`FORMAT_VERSION`) and ``gatescope_version`` (str).

Decisions (the contract other modules rely on):

- Tensors are float32, float64 or int64, any shape (0-d and empty included); other dtypes
  are refused on save (``ValueError``) and on load (:class:`CheckpointError`).
- ``meta`` goes through JSON: tuples come back as lists, numpy scalars as Python numbers,
  non-finite floats are written as ``NaN``/``Infinity`` (Python's JSON dialect). Dict keys
  must be strings (an int key would silently come back as a string, so it is refused).
  ``format_version`` and ``gatescope_version`` in ``meta`` are overwritten on save, so a
  loaded ``meta`` can be saved again unchanged.
- Saving never creates folders: a missing folder is a :class:`CheckpointError` naming it.
  No suffix is enforced or added to ``path``.
- Writes are atomic: the bytes go to a temporary file in the target's folder, are fsynced,
  then ``os.replace``d onto ``path``; the folder is fsynced afterwards (best effort). On any
  failure the temporary file is removed and a previous file at ``path`` is untouched. Only a
  process killed mid-write (SIGKILL, power loss) can leave a stale ``.<name>.*.tmp`` behind;
  ``path`` itself is always either the old or the new complete checkpoint. If ``path`` is a
  symlink, the link itself is replaced by the new file (the link's target is not written).
- Every loading problem raises :class:`CheckpointError` (a ``ValueError``) with a one-line
  message ``"<path>: <problem>"``. File-system failures while saving (no folder, no space,
  no permission) raise it too; bad arguments to :func:`save_checkpoint` raise ``ValueError``.
- Before anything is allocated from a file's contents, the declared header length is checked
  against the file size and :data:`MAX_HEADER_BYTES`, so random bytes fail fast.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tempfile
from collections.abc import Mapping
from importlib import metadata as _importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy as _stnp

__all__ = [
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "CheckpointError",
    "check_tensors",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT_VERSION = 2
"""Version of the file layout written by this gatescope; files with a larger one are refused.

1: gatescope 0.1.0 (task models; char LMs as ``"kind": "gatescope.charlm"`` files).
2: every model file is a ``gatescope.SequenceModel`` file (char LMs included: ``"model"``
   has ``"encoding"``, tensors ``carry.*`` hold a carried state). Version-1 files are read
   (``gatescope.model.read_model_file`` upgrades the old char-LM layout as it loads)."""

MAX_HEADER_BYTES = 100_000_000
"""Largest JSON header accepted on load (the safetensors reference limit)."""

META_KEY = "gatescope"  # safetensors metadata key holding the JSON-encoded meta dict
VERSION_KEY = "format_version"  # safetensors metadata key holding str(FORMAT_VERSION)

# safetensors dtype tag <-> numpy dtype (little-endian, as stored in the file)
_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
}
_ALLOWED = "float32, float64 or int64"
_MAX_PROBLEMS_SHOWN = 5


class CheckpointError(ValueError):
    """A checkpoint cannot be read or written; the message is ``"<path>: <problem>"``."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _error(path: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: {_one_line(problem)}")


def _gatescope_version() -> str:
    try:
        return _importlib_metadata.version("gatescope")
    except Exception:  # not installed (source checkout) or broken metadata
        return "unknown"


# --------------------------------------------------------------------------- saving


def _jsonable(obj: Any, where: str) -> Any:
    """Return a JSON-ready copy of ``obj``; ``ValueError`` naming ``where`` if impossible."""
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int | float):
        return obj
    if isinstance(obj, np.generic) and isinstance(obj.item(), bool | int | float | str):
        return obj.item()
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise ValueError(
                    f"{where} keys must be strings (JSON), got {type(key).__name__} key {key!r}"
                )
            out[key] = _jsonable(value, f"{where}[{key!r}]")
        return out
    if isinstance(obj, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise ValueError(
        f"{where} must be JSON-serializable (dict, list, str, int, float, bool, None), "
        f"got {type(obj).__name__}"
    )


def _clean_tensors(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(tensors, Mapping):
        raise ValueError(f"tensors must be a dict of name -> ndarray, got {type(tensors).__name__}")
    out = {}
    for name, arr in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(
                f"tensor names must be non-empty strings other than '__metadata__', got {name!r}"
            )
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"tensors[{name!r}] must be a numpy array, got {type(arr).__name__}")
        if f"{arr.dtype.kind}{arr.dtype.itemsize}" not in ("f4", "f8", "i8"):
            raise ValueError(
                f"tensors[{name!r}] has dtype {arr.dtype}; checkpoints hold {_ALLOWED} "
                "(cast it first)"
            )
        # C-contiguous little-endian: safetensors copies raw memory and stores little-endian
        out[name] = np.asarray(arr, dtype=arr.dtype.newbyteorder("<"), order="C")
    return out


def _new_file_mode(path: str) -> int:
    """Permission bits for the new file: the old file's, else 0o666 minus the umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    umask = 0o022
    try:  # read the umask without os.umask(), which would briefly change it process-wide
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
                    break
    except (OSError, ValueError, IndexError):
        pass
    return 0o666 & ~umask


def _fsync_dir(folder: str) -> None:
    """Make the rename durable; best effort (the new file is already in place)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems / platforms cannot fsync a directory
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> None:
    """Write ``tensors`` and ``meta`` to one ``.safetensors`` file at ``path``, atomically.

    ``tensors``: name -> float32/float64/int64 array (any shape, any memory layout or byte
    order; stored C-contiguous little-endian). ``meta``: a JSON-serializable dict (string
    keys); ``format_version`` and ``gatescope_version`` are added (overwriting any present).
    Neither argument is modified.

    Raises ``ValueError`` for bad arguments and :class:`CheckpointError` when the file cannot
    be written (missing folder, ``path`` is a folder, permissions, disk full). In every failure
    case a previous checkpoint at ``path`` is left as it was and no temporary file remains.
    """
    path_str = os.fspath(path)
    if not isinstance(path_str, str) or not path_str:
        raise ValueError(f"path must be a non-empty str or os.PathLike, got {path!r}")
    if not isinstance(meta, Mapping):
        raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
    clean = _clean_tensors(tensors)
    full_meta = _jsonable(meta, "meta")
    full_meta["format_version"] = FORMAT_VERSION
    full_meta["gatescope_version"] = _gatescope_version()
    meta_json = json.dumps(full_meta, allow_nan=True)
    header_meta = {META_KEY: meta_json, VERSION_KEY: str(FORMAT_VERSION)}
    data = _stnp.save(clean, metadata=header_meta)

    target = Path(path_str)
    folder = str(target.parent) if str(target.parent) else "."
    if target.is_dir():
        raise _error(path_str, "is a folder, not a file")
    if not os.path.isdir(folder):
        raise _error(path_str, f"folder {folder!r} does not exist (create it first)")

    tmp_path = None
    try:
        fd, tmp_path = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # mkstemp creates 0o600; give it a normal file's mode
                os.fchmod(f.fileno(), _new_file_mode(path_str))
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path_str)
        tmp_path = None  # renamed: nothing left to clean up
    except OSError as exc:
        raise _error(path_str, f"cannot write checkpoint: {exc.strerror or exc}") from exc
    finally:
        if tmp_path is not None:
            try:
                os.unlink(tmp_path)
            except OSError:
                pass
    _fsync_dir(folder)


# --------------------------------------------------------------------------- loading


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(token: str) -> Any:
    raise ValueError(f"invalid JSON constant {token}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _parse_header(path: str, f: Any, size: int) -> tuple[dict[str, Any], int]:
    """Read and validate the safetensors header; return it and the offset of the data."""
    not_ours = "not a gatescope checkpoint (not a safetensors file"
    if size < 8:
        raise _error(path, f"{not_ours}: only {size} bytes, empty or truncated)")
    (n,) = struct.unpack("<Q", f.read(8))
    if n < 2 or n > size - 8 or n > MAX_HEADER_BYTES:
        raise _error(
            path,
            f"{not_ours}: declared header length {n} does not fit in a file of {size} bytes "
            f"(limit {MAX_HEADER_BYTES}); corrupted or truncated)",
        )
    raw = f.read(n)
    if len(raw) != n:
        raise _error(path, f"{not_ours}: file shrank while reading the header)")
    if raw[:1] != b"{":
        raise _error(path, f"{not_ours}: header does not start with '{{')")
    try:
        header = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _error(path, f"corrupted checkpoint: header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _error(path, "corrupted checkpoint: header is not a JSON object")
    return header, 8 + n


def _check_version(path: str, header_meta: dict[str, Any]) -> int:
    raw = header_meta.get(VERSION_KEY)
    if raw is None:
        raise _error(path, f"not a gatescope checkpoint (no {VERSION_KEY!r} in its metadata)")
    if not isinstance(raw, str) or not re.fullmatch(r"[0-9]{1,9}", raw):
        raise _error(path, f"corrupted checkpoint: invalid format_version {raw!r}")
    version = int(raw)
    if version < 1:
        raise _error(path, f"corrupted checkpoint: invalid format_version {version}")
    if version > FORMAT_VERSION:
        raise _error(
            path,
            f"written by a newer gatescope (format {version} > {FORMAT_VERSION}); "
            "upgrade gatescope",
        )
    return version


def _check_entries(path: str, header: dict[str, Any], data_len: int) -> dict[str, tuple]:
    """Validate every tensor entry; return name -> (dtype, shape, begin, end)."""
    entries: dict[str, tuple] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        bad = f"corrupted checkpoint: tensor {name!r} has an invalid entry"
        if not isinstance(entry, dict):
            raise _error(path, bad)
        tag, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(tag, str):
            raise _error(path, f"{bad} (dtype {tag!r})")
        if tag not in _DTYPES:
            raise _error(
                path, f"tensor {name!r} has unsupported dtype {tag!r} (gatescope stores {_ALLOWED})"
            )
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise _error(path, f"{bad} (shape {shape!r})")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise _error(path, f"{bad} (data_offsets {offsets!r})")
        if offsets[1] > data_len:
            raise _error(
                path,
                f"corrupted checkpoint: truncated (tensor {name!r} ends at byte {offsets[1]} of "
                f"the data section, the file holds {data_len})",
            )
        dtype = _DTYPES[tag]
        nbytes = math.prod(shape) * dtype.itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise _error(
                path,
                f"{bad} (shape {tuple(shape)} needs {nbytes} bytes, offsets give "
                f"{offsets[1] - offsets[0]})",
            )
        entries[name] = (dtype, tuple(shape), offsets[0], offsets[1])
    covered = 0
    for _, _, begin, end in sorted(entries.values(), key=lambda e: (e[2], e[3])):
        if begin != covered:
            raise _error(path, "corrupted checkpoint: tensor data overlaps or has gaps")
        covered = end
    if covered != data_len:
        raise _error(
            path,
            f"corrupted checkpoint: tensors describe {covered} bytes of data but the file holds "
            f"{data_len} (truncated or trailing bytes)",
        )
    return entries


def _parse_meta(path: str, header_meta: dict[str, Any], version: int) -> dict[str, Any]:
    raw = header_meta.get(META_KEY)
    if raw is None:
        raise _error(path, f"not a gatescope checkpoint (no {META_KEY!r} key in its metadata)")
    if not isinstance(raw, str):
        raise _error(path, f"corrupted checkpoint: metadata {META_KEY!r} is not a string")
    try:
        meta = json.loads(raw, object_pairs_hook=_reject_duplicates)
    except (ValueError, RecursionError) as exc:
        raise _error(path, f"corrupted checkpoint: metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise _error(path, "corrupted checkpoint: metadata is not a JSON object")
    if meta.get("format_version", version) != version:
        raise _error(
            path,
            f"corrupted checkpoint: format_version {meta['format_version']!r} in the metadata "
            f"disagrees with {version} in the header",
        )
    meta["format_version"] = version
    return meta


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`; return ``(tensors, meta)``.

    Arrays are writeable, C-contiguous copies that own their memory (native byte order).
    ``meta`` is the saved dict with ``format_version`` (int) and ``gatescope_version``.
    Every problem (missing, unreadable, not safetensors, truncated, corrupted, no gatescope
    metadata, newer format, unsupported dtype) raises :class:`CheckpointError` naming the file.
    Only bytes and JSON are parsed; no code in the file is ever executed.
    """
    path_str = os.fspath(path)
    try:
        with open(path_str, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header, data_start = _parse_header(path_str, f, size)
            header_meta = header.get("__metadata__")
            if not isinstance(header_meta, dict):
                raise _error(
                    path_str,
                    "not a gatescope checkpoint (safetensors file without gatescope metadata)",
                )
            if not all(isinstance(v, str) for v in header_meta.values()):
                raise _error(path_str, "corrupted checkpoint: metadata values must be strings")
            version = _check_version(path_str, header_meta)
            entries = _check_entries(path_str, header, size - data_start)
            meta = _parse_meta(path_str, header_meta, version)
            f.seek(0)
            blob = f.read()
    except FileNotFoundError:
        raise _error(path_str, "no such file") from None
    except IsADirectoryError:
        raise _error(path_str, "is a folder, not a checkpoint file") from None
    except PermissionError:
        raise _error(path_str, "permission denied") from None
    except OSError as exc:
        raise _error(path_str, f"cannot read: {exc.strerror or exc}") from None
    if len(blob) != size:
        raise _error(path_str, "file changed while it was being read")

    try:
        views = _stnp.load(blob)
    except Exception as exc:  # SafetensorError and friends: the file is malformed
        raise _error(path_str, f"corrupted checkpoint: {exc}") from None
    tensors: dict[str, np.ndarray] = {}
    for name, (dtype, shape, _, _) in entries.items():
        view = views.get(name)
        if view is None or view.shape != shape or view.dtype.newbyteorder("<") != dtype:
            raise _error(path_str, f"corrupted checkpoint: tensor {name!r} could not be decoded")
        tensors[name] = np.array(view, dtype=dtype.newbyteorder("="), order="C", copy=True)
    if set(views) != set(entries):
        raise _error(path_str, "corrupted checkpoint: tensor list disagrees with the header")
    return tensors, meta


# --------------------------------------------------------------------------- shape checks


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def check_tensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[int, ...]],
) -> None:
    """Check that ``tensors`` has exactly the names and shapes in ``expected``.

    Raises :class:`CheckpointError` naming ``path`` and, for each problem, the tensor name
    with the expected and actual shape (missing, unexpected, or wrong shape); at most
    five problems are spelled out in the one-line message, then a count of the rest.
    """
    path_str = os.fspath(path)
    want = {name: tuple(int(d) for d in shape) for name, shape in expected.items()}
    problems = []
    for name in sorted(set(want) | set(tensors)):
        if name not in tensors:
            problems.append(f"missing tensor {name!r} (expected shape {_fmt_shape(want[name])})")
        elif name not in want:
            got = tuple(np.shape(tensors[name]))
            problems.append(f"unexpected tensor {name!r} (shape {_fmt_shape(got)})")
        else:
            got = tuple(np.shape(tensors[name]))
            if got != want[name]:
                exp = _fmt_shape(want[name])
                problems.append(f"tensor {name!r} has shape {_fmt_shape(got)}, expected {exp}")
    if not problems:
        return
    shown = "; ".join(problems[:_MAX_PROBLEMS_SHOWN])
    if len(problems) > _MAX_PROBLEMS_SHOWN:
        shown += f"; and {len(problems) - _MAX_PROBLEMS_SHOWN} more"
    raise _error(path_str, f"tensors do not match the model: {shown}")
