"""Tests for gatescope.checkpoint: round trips, atomic writes, hostile files, shape checks."""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import signal
import stat
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as stnp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gatescope.checkpoint as ckpt
from gatescope.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    check_tensors,
    load_checkpoint,
    save_checkpoint,
)

SRC_DIR = Path(ckpt.__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers


def _sample_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "rnn.weight_ih_l0": rng.standard_normal((8, 3)).astype(np.float32),
        "rnn.bias_l0": rng.standard_normal(8),  # float64
        "step": np.array(7, dtype=np.int64),  # 0-d
        "one": np.array([2.5], dtype=np.float32),  # 1 element
        "empty": np.zeros((0, 4), dtype=np.float64),
    }


def _sample_meta() -> dict:
    return {
        "arch": "lstm",
        "config": {"input_size": 3, "hidden_size": 2, "layers": [{"k": 0}, {"k": 1}]},
        "history": [[0, 1.25], [1, 0.5]],
        "flags": {"done": False, "note": None, "name": "état ✓"},
    }


def _raw_safetensors(header: dict, data: bytes) -> bytes:
    """Build a safetensors file by hand (8-byte little-endian length, JSON header, data)."""
    head = json.dumps(header).encode("utf-8")
    return struct.pack("<Q", len(head)) + head + data


def _split(blob: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def _valid_bytes(tmp_path: Path) -> bytes:
    p = tmp_path / "valid.safetensors"
    save_checkpoint(p, _sample_tensors(), _sample_meta())
    return p.read_bytes()


def _our_metadata(meta: dict | None = None, version: str = str(FORMAT_VERSION)) -> dict:
    return {"gatescope": json.dumps(meta if meta is not None else {}), "format_version": version}


def _assert_loads_or_checkpoint_error(path: Path) -> None:
    """The fuzz contract: load_checkpoint returns sane values or raises CheckpointError."""
    try:
        tensors, meta = load_checkpoint(path)
    except CheckpointError as exc:
        msg = str(exc)
        assert msg.startswith(f"{path}: ")
        assert "\n" not in msg
        return
    assert isinstance(meta, dict)
    assert meta["format_version"] == FORMAT_VERSION
    for arr in tensors.values():
        assert isinstance(arr, np.ndarray)
        assert arr.dtype in (np.float32, np.float64, np.int64)
        assert arr.flags.writeable and arr.flags.owndata


# --------------------------------------------------------------------------- round trips


def test_round_trip_values_dtypes_shapes_and_meta(tmp_path):
    tensors, meta = _sample_tensors(), _sample_meta()
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, tensors, meta)
    got, got_meta = load_checkpoint(path)

    assert set(got) == set(tensors)
    for name, arr in tensors.items():
        assert got[name].dtype == arr.dtype, name
        assert got[name].shape == arr.shape, name
        np.testing.assert_array_equal(got[name], arr)
        assert got[name].flags.writeable and got[name].flags.owndata
        assert got[name].flags.c_contiguous
    assert got["step"].shape == () and got["one"].shape == (1,)

    expected_meta = dict(meta, format_version=FORMAT_VERSION)
    gs_version = got_meta.pop("gatescope_version")
    assert isinstance(gs_version, str) and gs_version
    assert got_meta == expected_meta


def test_returned_arrays_are_independent_copies(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {"w": np.arange(4.0)}, {})
    a, _ = load_checkpoint(path)
    b, _ = load_checkpoint(path)
    a["w"][...] = -1.0  # writeable, and shares memory with nothing else
    np.testing.assert_array_equal(b["w"], np.arange(4.0))
    assert not np.shares_memory(a["w"], b["w"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_round_trip_exact_bits_per_dtype(tmp_path, dtype):
    rng = np.random.default_rng(1)
    if np.dtype(dtype).kind == "f":
        arr = rng.standard_normal((3, 5)).astype(dtype)
        arr[0, 0], arr[0, 1], arr[0, 2] = np.nan, np.inf, -0.0
    else:
        arr = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, size=(3, 5), dtype=dtype)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {"x": arr}, {})
    got, _ = load_checkpoint(path)
    assert got["x"].dtype == arr.dtype
    assert got["x"].tobytes() == arr.tobytes()


def test_non_contiguous_and_big_endian_inputs_are_stored_correctly(tmp_path):
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    tensors = {
        "transposed": base.T,
        "strided": base[:, ::2],
        "big_endian": base.astype(">f8"),
        "big_endian_0d": np.array(3.5, dtype=">f4"),
    }
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, tensors, {})
    got, _ = load_checkpoint(path)
    for name, arr in tensors.items():
        np.testing.assert_array_equal(got[name], arr)
        assert got[name].shape == arr.shape
        assert got[name].dtype == arr.dtype.newbyteorder("=")
        assert got[name].dtype.isnative


def test_empty_tensor_dict_round_trips(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {}, {"only": "meta"})
    got, meta = load_checkpoint(path)
    assert got == {}
    assert meta["only"] == "meta"


def test_meta_goes_through_json_and_callers_dict_is_untouched(tmp_path):
    meta = {
        "tuple": (1, 2),
        "np_float": np.float32(0.5),
        "np_int": np.int64(3),
        "np_bool": np.bool_(True),
        "nan": float("nan"),
        "format_version": 99,  # overwritten on save
        "gatescope_version": "old",  # overwritten on save
    }
    snapshot = dict(meta)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {}, meta)
    assert meta.keys() == snapshot.keys()
    assert meta["format_version"] == 99 and meta["gatescope_version"] == "old"

    _, got = load_checkpoint(path)
    assert got["tuple"] == [1, 2]
    assert got["np_float"] == 0.5 and type(got["np_float"]) is float
    assert got["np_int"] == 3 and type(got["np_int"]) is int
    assert got["np_bool"] is True
    assert np.isnan(got["nan"])
    assert got["format_version"] == FORMAT_VERSION
    assert got["gatescope_version"] != "old"


def test_loaded_meta_can_be_saved_again(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _sample_tensors(), _sample_meta())
    tensors, meta = load_checkpoint(path)
    save_checkpoint(path, tensors, meta)
    tensors2, meta2 = load_checkpoint(path)
    assert meta2 == meta
    for name in tensors:
        np.testing.assert_array_equal(tensors2[name], tensors[name])


def test_file_is_plain_safetensors_with_our_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {"w": np.ones((2, 2), np.float32)}, {"arch": "gru"})
    header, _ = _split(path.read_bytes())
    assert header["__metadata__"]["format_version"] == str(FORMAT_VERSION)
    assert json.loads(header["__metadata__"]["gatescope"])["arch"] == "gru"
    np.testing.assert_array_equal(stnp.load_file(str(path))["w"], np.ones((2, 2), np.float32))


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "tensors, fragment",
    [
        ({"w": np.zeros(2, np.int32)}, "int32"),
        ({"w": np.zeros(2, np.float16)}, "float16"),
        ({"w": np.zeros(2, bool)}, "bool"),
        ({"w": np.zeros(2, np.complex128)}, "complex128"),
        ({"w": [1.0, 2.0]}, "numpy array"),
        ({"__metadata__": np.zeros(2)}, "__metadata__"),
        ({"": np.zeros(2)}, "non-empty"),
        ({3: np.zeros(2)}, "strings"),
        ([("w", np.zeros(2))], "dict"),
    ],
)
def test_save_rejects_bad_tensors_and_writes_nothing(tmp_path, tensors, fragment):
    path = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match=fragment):
        save_checkpoint(path, tensors, {})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "meta, fragment",
    [
        ({1: "int key"}, "keys must be strings"),
        ({"nested": {"deep": {2: 0}}}, r"meta\['nested'\]\['deep'\]"),
        ({"obj": object()}, r"meta\['obj'\]"),
        ({"arr": np.zeros(3)}, r"meta\['arr'\]"),
        ({"list": [1, {3}]}, r"meta\['list'\]\[1\]"),
        ([("a", 1)], "meta must be a dict"),
    ],
)
def test_save_rejects_meta_that_json_cannot_round_trip(tmp_path, meta, fragment):
    with pytest.raises(ValueError, match=fragment):
        save_checkpoint(tmp_path / "m.safetensors", {}, meta)
    assert list(tmp_path.iterdir()) == []


def test_save_into_missing_folder_is_an_error_and_creates_nothing(tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "m.safetensors"
    with pytest.raises(CheckpointError, match="does not exist") as info:
        save_checkpoint(path, {}, {})
    assert str(path) in str(info.value)
    assert str(tmp_path / "no" / "such" / "dir") in str(info.value)
    assert not (tmp_path / "no").exists()


def test_save_onto_a_folder_is_an_error(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(CheckpointError, match="is a folder"):
        save_checkpoint(tmp_path / "d", {}, {})
    assert (tmp_path / "d").is_dir()


def test_save_to_bare_filename_uses_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_checkpoint("bare.safetensors", {"w": np.ones(1)}, {})
    assert load_checkpoint(tmp_path / "bare.safetensors")[0]["w"][0] == 1.0


def test_new_file_gets_normal_permissions_and_old_mode_is_kept(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {}, {})
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    path.chmod(0o640)
    save_checkpoint(path, {}, {"again": True})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


# --------------------------------------------------------------------------- atomicity


def _write_old(path: Path) -> None:
    save_checkpoint(path, {"w": np.full(3, 1.0)}, {"version": "old"})


def _assert_old_intact(path: Path) -> None:
    tensors, meta = load_checkpoint(path)
    assert meta["version"] == "old"
    np.testing.assert_array_equal(tensors["w"], np.full(3, 1.0))
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "temp file left behind"


@pytest.mark.parametrize("failing", ["replace", "fsync", "write"])
def test_failure_during_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch, failing):
    path = tmp_path / "m.safetensors"
    _write_old(path)

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if failing == "write":
        real_fdopen = os.fdopen

        class FailingFile(io.RawIOBase):
            def __init__(self, fd):
                self._f = real_fdopen(fd, "wb")

            def fileno(self):
                return self._f.fileno()

            def write(self, data):
                self._f.write(bytes(data)[:10])  # a partial write, then the disk fills up
                boom()

            def close(self):
                self._f.close()
                super().close()

        monkeypatch.setattr(os, "fdopen", lambda fd, mode="r": FailingFile(fd))
    else:
        monkeypatch.setattr(os, failing, boom)

    with pytest.raises(CheckpointError, match="No space left") as info:
        save_checkpoint(path, {"w": np.full(3, 2.0)}, {"version": "new"})
    assert str(path) in str(info.value)
    monkeypatch.undo()
    _assert_old_intact(path)


def test_interrupt_during_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    _write_old(path)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"w": np.full(3, 2.0)}, {"version": "new"})
    monkeypatch.undo()
    _assert_old_intact(path)


def test_serialization_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    _write_old(path)

    def fail(*args, **kwargs):
        raise RuntimeError("serializer exploded")

    monkeypatch.setattr(ckpt._stnp, "save", fail)
    with pytest.raises(RuntimeError, match="serializer exploded"):
        save_checkpoint(path, {"w": np.full(3, 2.0)}, {"version": "new"})
    monkeypatch.undo()
    _assert_old_intact(path)


_CHILD = """
import sys
import numpy as np
from gatescope.checkpoint import save_checkpoint

path = sys.argv[1]
step = 0
while True:
    w = np.full((256, 512), float(step))  # 1 MiB, so a kill often lands mid-write
    save_checkpoint(path, {"w": w, "step": np.array(step)}, {"step": step})
    if step == 0:
        print("ready", flush=True)
    step += 1
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_tight_write_loop_always_leaves_a_loadable_file(tmp_path):
    path = tmp_path / "live.safetensors"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC_DIR), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    rng = random.Random(1234)
    steps_seen = []
    for _ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            line = proc.stdout.readline()
            assert line == "ready\n", proc.stderr.read()
            # random moment: the child keeps rewriting the file until killed
            proc.stdout.close()
            time.sleep(rng.uniform(0.0, 0.3))
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL

        tensors, meta = load_checkpoint(path)  # whatever survived is one complete checkpoint
        step = meta["step"]
        assert int(tensors["step"]) == step
        np.testing.assert_array_equal(tensors["w"], np.full((256, 512), float(step)))
        steps_seen.append(step)
        # only stale temporaries of killed writes may sit beside it
        for other in tmp_path.iterdir():
            assert other == path or (
                other.name.startswith(f".{path.name}.") and other.name.endswith(".tmp")
            )
    assert len(steps_seen) == 8


# --------------------------------------------------------------------------- hostile files


class _Evil:
    """Unpickling this would create a marker file; loading must never get that far."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _bad_files(tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, fragment the error message must contain)."""
    valid = _valid_bytes(tmp_path)
    header, data = _split(valid)
    (n,) = struct.unpack("<Q", valid[:8])
    rng = np.random.default_rng(7)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("data.pkl", pickle.dumps({"w": [1, 2, 3]}))
    npz = io.BytesIO()
    np.savez(npz, w=np.zeros(3))

    def with_meta(**changes) -> bytes:
        h = json.loads(json.dumps(header))
        h["__metadata__"].update(changes)
        return _raw_safetensors(h, data)

    def with_header(mutate) -> bytes:
        h = json.loads(json.dumps(header))
        mutate(h)
        return _raw_safetensors(h, data)

    def set_entry(name, key, value):
        return lambda h: h[name].__setitem__(key, value)

    meta_v2 = json.loads(header["__metadata__"]["gatescope"]) | {
        "format_version": FORMAT_VERSION + 1
    }
    f16 = stnp.save({"w": np.zeros(2, np.float16)}, metadata=_our_metadata())
    i32 = stnp.save({"w": np.zeros(2, np.int32)}, metadata=_our_metadata())
    return {
        "empty": (b"", "not a gatescope checkpoint"),
        "three_bytes": (b"abc", "not a gatescope checkpoint"),
        "truncated_in_length": (valid[:5], "not a gatescope checkpoint"),
        "truncated_after_length": (valid[:8], "not a gatescope checkpoint"),
        "truncated_in_header": (valid[: 8 + n // 2], "not a gatescope checkpoint"),
        "truncated_after_header": (valid[: 8 + n], "truncated"),
        "truncated_in_data": (valid[: 8 + n + len(data) // 2], "truncated"),
        "truncated_last_byte": (valid[:-1], "truncated"),
        "trailing_bytes": (valid + b"\x00" * 8, "trailing"),
        "random_small": (rng.bytes(64), "not a gatescope checkpoint"),
        "random_large": (rng.bytes(1 << 16), "not a gatescope checkpoint"),
        "huge_header_length": (struct.pack("<Q", 2**63) + b"{}", "header length"),
        "header_longer_than_file": (struct.pack("<Q", 10**9) + b'{"a": 1}', "header length"),
        "pickle": (pickle.dumps({"w": np.zeros(3)}), "not a gatescope checkpoint"),
        "zip": (zbuf.getvalue(), "not a gatescope checkpoint"),
        "npz": (npz.getvalue(), "not a gatescope checkpoint"),
        "json": (json.dumps({"w": [1, 2, 3]}).encode(), "not a gatescope checkpoint"),
        "header_not_json": (struct.pack("<Q", 4) + b"{abc", "not valid JSON"),
        "header_not_utf8": (struct.pack("<Q", 4) + b"{\xff\xfe}", "not valid JSON"),
        "header_is_list": (struct.pack("<Q", 2) + b"[]", "not a gatescope checkpoint"),
        "header_deeply_nested": (_raw_bytes_nested(), "not valid JSON"),
        "duplicate_tensor": (_duplicate_key_file(), "duplicate key"),
        "no_metadata": (stnp.save({"w": np.zeros(2)}), "not a gatescope checkpoint"),
        "metadata_without_our_key": (
            stnp.save({"w": np.zeros(2)}, metadata={"format_version": "1"}),
            "no 'gatescope' key",
        ),
        "metadata_without_version": (
            stnp.save({"w": np.zeros(2)}, metadata={"gatescope": "{}"}),
            "no 'format_version'",
        ),
        "future_version": (
            with_meta(format_version=str(FORMAT_VERSION + 1)),
            f"newer gatescope (format {FORMAT_VERSION + 1} > {FORMAT_VERSION})",
        ),
        "far_future_version": (with_meta(format_version="999"), "upgrade"),
        "version_not_int": (with_meta(format_version="1.0"), "invalid format_version"),
        "version_word": (with_meta(format_version="one"), "invalid format_version"),
        "version_zero": (with_meta(format_version="0"), "invalid format_version"),
        "version_disagrees": (with_meta(gatescope=json.dumps(meta_v2)), "disagrees"),
        "meta_not_json": (with_meta(gatescope="{not json"), "metadata is not valid JSON"),
        "meta_is_list": (with_meta(gatescope="[1, 2]"), "not a JSON object"),
        "metadata_not_object": (with_header(lambda h: h.update(__metadata__=[1])), "gatescope"),
        "unsupported_f16": (f16, "unsupported dtype 'F16'"),
        "unsupported_i32": (i32, "unsupported dtype 'I32'"),
        "unknown_dtype": (
            with_header(set_entry("rnn.bias_l0", "dtype", "PICKLE")),
            "unsupported dtype",
        ),
        "negative_shape": (with_header(set_entry("one", "shape", [-1])), "invalid entry"),
        "reversed_offsets": (
            with_header(set_entry("one", "data_offsets", [4, 0])),
            "data_offsets [4, 0]",
        ),
        "shape_disagrees_with_bytes": (with_header(set_entry("one", "shape", [2])), "needs"),
        "offsets_out_of_range": (
            with_header(set_entry("one", "data_offsets", [0, 10**12])),
            "truncated",
        ),
        "overlapping_offsets": (_overlapping_file(), "overlaps"),
    }


def _raw_bytes_nested() -> bytes:
    head = b"{" + b'"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return struct.pack("<Q", len(head)) + head


def _duplicate_key_file() -> bytes:
    entry = '{"dtype":"F64","shape":[1],"data_offsets":[0,8]}'
    meta = '"__metadata__":{"gatescope":"{}","format_version":"1"}'
    head = "{" + f'{meta},"w":{entry},"w":{entry}' + "}"
    return struct.pack("<Q", len(head)) + head.encode() + b"\x00" * 8


def _overlapping_file() -> bytes:
    header = {
        "__metadata__": _our_metadata(),
        "a": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]},
        "b": {"dtype": "F64", "shape": [1], "data_offsets": [8, 16]},
    }
    return _raw_safetensors(header, b"\x00" * 16)


BAD_CASES = [
    "empty", "three_bytes", "truncated_in_length", "truncated_after_length",
    "truncated_in_header", "truncated_after_header", "truncated_in_data", "truncated_last_byte",
    "trailing_bytes", "random_small", "random_large", "huge_header_length",
    "header_longer_than_file", "pickle", "zip", "npz", "json", "header_not_json",
    "header_not_utf8", "header_is_list", "header_deeply_nested", "duplicate_tensor",
    "no_metadata", "metadata_without_our_key", "metadata_without_version", "future_version",
    "far_future_version", "version_not_int", "version_word", "version_zero",
    "version_disagrees", "meta_not_json", "meta_is_list", "metadata_not_object",
    "unsupported_f16", "unsupported_i32", "unknown_dtype", "negative_shape", "reversed_offsets",
    "shape_disagrees_with_bytes", "offsets_out_of_range", "overlapping_offsets",
]  # fmt: skip


def test_bad_case_list_is_complete(tmp_path):
    assert sorted(BAD_CASES) == sorted(_bad_files(tmp_path))


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_file_raises_checkpoint_error_naming_the_file(tmp_path, case):
    blob, fragment = _bad_files(tmp_path)[case]
    path = tmp_path / "bad.safetensors"  # a neutral name: the fragment must be in the problem
    path.write_bytes(blob)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ")
    assert fragment in msg
    assert "\n" not in msg
    assert isinstance(info.value, ValueError)


def test_truncation_at_every_point_of_the_header_and_first_bytes(tmp_path):
    valid = _valid_bytes(tmp_path)
    path = tmp_path / "cut.safetensors"
    (n,) = struct.unpack("<Q", valid[:8])
    cuts = sorted(set(range(0, 8 + n + 16)) | set(range(8 + n, len(valid), 97)))
    for cut in cuts:
        path.write_bytes(valid[:cut])
        with pytest.raises(CheckpointError, match=str(path)):
            load_checkpoint(path)


def test_loading_a_pickle_never_executes_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(CheckpointError, match="not a gatescope checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_file(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError, match=r"nope\.safetensors: no such file$"):
        load_checkpoint(path)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder") as info:
        load_checkpoint(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: ")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file"
)
def test_unreadable_file(tmp_path):
    path = tmp_path / "locked.safetensors"
    save_checkpoint(path, {}, {})
    path.chmod(0)
    try:
        with pytest.raises(CheckpointError, match="permission denied"):
            load_checkpoint(path)
    finally:
        path.chmod(0o600)


def test_huge_declared_header_is_refused_before_reading_it(tmp_path, monkeypatch):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", ckpt.MAX_HEADER_BYTES + 1) + b"{" + b" " * 64)
    with pytest.raises(CheckpointError, match="header length"):
        load_checkpoint(path)
    # a header that fits the file but exceeds the limit is refused too
    monkeypatch.setattr(ckpt, "MAX_HEADER_BYTES", 16)
    save_checkpoint(path, {"w": np.zeros(1)}, {})
    with pytest.raises(CheckpointError, match="limit 16"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- check_tensors


def test_check_tensors_accepts_exact_match():
    tensors = {"a": np.zeros((4, 3)), "b": np.zeros(4), "s": np.array(1)}
    check_tensors("m.safetensors", tensors, {"a": (4, 3), "b": (4,), "s": ()})
    check_tensors("m.safetensors", tensors, {"a": [4, 3], "b": [np.int64(4)], "s": []})


@pytest.mark.parametrize(
    "expected, fragments",
    [
        (
            {"a": (4, 2), "b": (4,)},
            ["tensor 'a' has shape (4, 3), expected (4, 2)"],
        ),
        (
            {"a": (4, 3), "b": (4,), "c": (2,)},
            ["missing tensor 'c' (expected shape (2,))"],
        ),
        (
            {"a": (4, 3)},
            ["unexpected tensor 'b' (shape (4,))"],
        ),
        (
            {"a": (3, 4), "c": ()},
            ["tensor 'a' has shape (4, 3), expected (3, 4)", "unexpected tensor 'b'", "'c'"],
        ),
    ],
)
def test_check_tensors_reports_name_expected_and_actual(expected, fragments):
    path = Path("runs") / "model.safetensors"
    with pytest.raises(CheckpointError) as info:
        check_tensors(path, {"a": np.zeros((4, 3)), "b": np.zeros(4)}, expected)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ")
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg


def test_check_tensors_summarises_many_problems_on_one_line():
    tensors = {f"t{i}": np.zeros(2) for i in range(9)}
    with pytest.raises(CheckpointError, match="and 4 more$") as info:
        check_tensors("m.safetensors", tensors, {f"t{i}": (3,) for i in range(9)})
    assert "\n" not in str(info.value)


def test_check_tensors_on_a_loaded_checkpoint(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {"rnn.weight_ih_l0": np.zeros((8, 3), np.float32)}, {"hidden": 2})
    tensors, meta = load_checkpoint(path)
    check_tensors(path, tensors, {"rnn.weight_ih_l0": (4 * meta["hidden"], 3)})
    with pytest.raises(CheckpointError, match=r"expected \(12, 3\)") as info:
        check_tensors(path, tensors, {"rnn.weight_ih_l0": (4 * 3, 3)})
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- fuzzing


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def valid_blob(fuzz_dir):
    path = fuzz_dir / "valid.safetensors"
    save_checkpoint(
        path,
        {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(2.0), "k": np.array(3)},
        {"arch": "gru", "sizes": [3, 2]},
    )
    return path.read_bytes()


_index = st.integers(min_value=0, max_value=2**16)
_mutation = st.one_of(
    st.tuples(st.just("flip"), _index, st.integers(1, 255)),
    st.tuples(st.just("insert"), _index, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), _index, st.integers(1, 16)),
    st.tuples(st.just("truncate"), _index, st.just(0)),
    st.tuples(st.just("set"), _index, st.sampled_from(b'{}[]",:0123456789 \x00\xff')),
)


def _mutate(blob: bytes, ops) -> bytes:
    data = bytearray(blob)
    for kind, where, arg in ops:
        i = where % (len(data) + 1)
        if kind == "flip" and i < len(data):
            data[i] ^= arg
        elif kind == "insert":
            data[i:i] = arg
        elif kind == "delete":
            del data[i : i + arg]
        elif kind == "truncate":
            del data[i:]
        elif kind == "set" and i < len(data):
            data[i] = arg
    return bytes(data)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(_mutation, min_size=1, max_size=4))
def test_fuzz_byte_mutations_return_or_raise_checkpoint_error(fuzz_dir, valid_blob, ops):
    path = fuzz_dir / "mutated.safetensors"
    path.write_bytes(_mutate(valid_blob, ops))
    _assert_loads_or_checkpoint_error(path)


_json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
_small_int = st.integers(min_value=-2, max_value=64)


@pytest.mark.slow
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    target=st.sampled_from(["w", "b", "k", "__metadata__"]),
    field=st.sampled_from(["dtype", "shape", "data_offsets", "gatescope", "format_version", "x"]),
    value=st.one_of(
        _json_value,
        st.lists(_small_int, max_size=3),
        st.sampled_from(["F32", "F64", "I64", "F16", "BOOL", "U8", "1", "2", "0", "{}", "[]"]),
    ),
)
def test_fuzz_header_fields_return_or_raise_checkpoint_error(
    fuzz_dir, valid_blob, target, field, value
):
    header, data = _split(valid_blob)
    if target == "__metadata__" and field in ("gatescope", "format_version", "x"):
        header["__metadata__"][field] = value
    elif target == "__metadata__":
        header["__metadata__"] = value
    else:
        header[target][field] = value
    path = fuzz_dir / "header.safetensors"
    path.write_bytes(_raw_safetensors(header, data))
    _assert_loads_or_checkpoint_error(path)
