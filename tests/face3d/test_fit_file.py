"""load_fit never trusts a file: wrong shapes, dtypes, NaNs, missing keys, junk bytes and
pickles all give one FitFileError (a ValueError) line naming the file; a file that loads is
exactly what was saved. Synthetic fits only (no MediaPipe), so this module runs in seconds."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest
from fit_samples import make_fit
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from face3d.fit import FitFileError, fit_path_for, legacy_fit_path, load_fit

ARRAY_SHAPES = {"vertices": (468, 3), "iris": (10, 3), "landmarks68": (68, 2),
                "landmarks5": (5, 2), "rotation": (3, 3), "translation": (3,)}


def save_arrays(path, arrays: dict) -> str:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return str(path)


def assert_one_line_error(path, match: str | None = None) -> str:
    with pytest.raises(FitFileError) as exc:
        load_fit(path)
    msg = str(exc.value)
    assert isinstance(exc.value, ValueError)
    assert str(path) in msg and "\n" not in msg and len(msg) < 400, msg
    if match:
        assert match in msg, msg
    return msg


def assert_same(got, fit):
    for k, v in vars(fit).items():
        g = getattr(got, k)
        if isinstance(v, np.ndarray):
            assert g.dtype == v.dtype and np.array_equal(g, v), k
        else:
            assert g == v and type(g) is type(v), k


def test_round_trip(tmp_path):
    fit = make_fit()
    fit.save(tmp_path / "a.npz")
    assert_same(load_fit(tmp_path / "a.npz"), fit)


BAD_FIELDS = {
    "wrong vertex count": ("vertices", np.zeros((478, 3), np.float32), "shape (478, 3)"),
    "vertices transposed": ("vertices", np.zeros((3, 468), np.float32), "expected (468, 3)"),
    "all-NaN vertices": ("vertices", np.full((468, 3), np.nan, np.float32), "non-finite"),
    "one inf landmark": ("landmarks68", np.pad(np.full((1, 2), np.inf), ((0, 67), (0, 0))),
                         "non-finite"),
    "int vertices": ("vertices", np.zeros((468, 3), np.int64), "dtype int64"),
    "float16 vertices": ("vertices", np.zeros((468, 3), np.float16), "dtype float16"),
    "complex rotation": ("rotation", np.eye(3, dtype=np.complex64), "dtype complex64"),
    "string vertices": ("vertices", np.full((468, 3), "1.0"), "dtype <U3"),
    "not a rotation": ("rotation", 2 * np.eye(3, dtype=np.float32), "not a rotation"),
    "reflection": ("rotation", np.diag([1, 1, -1]).astype(np.float32), "not a rotation"),
    "NaN yaw": ("yaw", np.float64(np.nan), "finite"),
    "string scale": ("scale", np.asarray("1.5"), "expected a number"),
    "bool yaw": ("yaw", np.asarray(True), "expected a number"),
    "scale array": ("scale", np.zeros(3), "single value"),
    "zero scale": ("scale", np.float64(0.0), "expected > 0"),
    "negative image size": ("image_size", np.array([-1, 512]), "plausible"),
    "float image size": ("image_size", np.array([600.5, 512.0]), "2 integers"),
    "image size of 3": ("image_size", np.array([600, 512, 3]), "2 integers"),
    "float num_faces": ("num_faces", np.float64(1.7), "integer"),
    "zero faces": ("num_faces", np.int64(0), ">= 1"),
    "numeric fitter": ("fitter", np.float64(3.0), "text"),
    "format 1": ("format_version", np.int64(1), "refit"),
    "format as text": ("format_version", np.asarray("2"), "integer"),
}


@pytest.mark.parametrize("case", list(BAD_FIELDS))
def test_bad_field_is_one_line_naming_file_and_field(tmp_path, case):
    name, value, needle = BAD_FIELDS[case]
    arrays = {**make_fit().to_arrays(), name: value}
    path = save_arrays(tmp_path / "bad.npz", arrays)
    msg = assert_one_line_error(path, needle)
    if name != "format_version":
        assert repr(name) in msg


def test_missing_keys_extra_keys(tmp_path):
    arrays = make_fit().to_arrays()
    for drop in ("vertices", "format_version", "fitter"):
        path = save_arrays(tmp_path / f"no_{drop}.npz",
                           {k: v for k, v in arrays.items() if k != drop})
        assert_one_line_error(path, f"lacks {drop}")
    # an extra array (a newer writer's field) is ignored, the rest still loads exactly
    path = save_arrays(tmp_path / "extra.npz", {**arrays, "future_field": np.zeros(2)})
    assert_same(load_fit(path), make_fit())


def _pickle_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{**make_fit().to_arrays(),
                     "vertices": np.array([{"x": 1}, None], dtype=object)})
    return buf.getvalue()


class Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_junk_and_pickles_are_refused_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "good.npz"
    make_fit().save(good)
    data = good.read_bytes()
    big = io.BytesIO()
    with zipfile.ZipFile(big, "w") as zf:  # a member claiming more than any fit file
        zf.writestr("vertices.npy", b"\0" * (2 << 20))
    raw_members = io.BytesIO()
    with zipfile.ZipFile(raw_members, "w") as zf:  # a zip, but its members are not .npy
        for k in make_fit().to_arrays():
            zf.writestr(k, b"\x00" * 16)
    cases = {
        "zip of raw members": (raw_members.getvalue(), "not a numpy array"),
        "empty": (b"", "not an .npz"),
        "text": (b"hello\n", "not an .npz"),
        "truncated": (data[: len(data) // 2], "not an .npz"),
        "cut at the end": (data[:-10], ""),
        "pickle of an object": (pickle.dumps(Boom()), "not an .npz"),
        "npz with an object array": (_pickle_npz(), "refused for safety"),
        "huge member": (big.getvalue(), "larger than"),
        "zip header then junk": (b"PK\x03\x04" + b"\xff" * 200, ""),
    }
    for name, (content, needle) in cases.items():
        path = tmp_path / f"{name}.npz"
        path.write_bytes(content)
        assert_one_line_error(path, needle)
    np.save(tmp_path / "bare.npy", np.zeros(3))
    assert_one_line_error(tmp_path / "bare.npy", "not an .npz")
    assert_one_line_error(tmp_path / "missing.npz", "not found")
    (tmp_path / "folder.npz").mkdir()
    assert_one_line_error(tmp_path / "folder.npz")
    assert not (tmp_path / "PWNED").exists()


# ---------------------------------------------------------------- property-based

SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8,
                          np.bool_, np.complex64, "U4", "S4"])


@given(content=st.binary(max_size=2000))
def test_random_bytes_never_crash(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("rb") / "x.npz"
    path.write_bytes(content)
    assert_one_line_error(path)


@given(field=st.sampled_from(sorted(make_fit().to_arrays())),
       value=st.one_of(hnp.arrays(DTYPES, SHAPES), st.floats(allow_nan=True),
                       st.integers(-2**40, 2**40), st.text(max_size=5)))
def test_random_field_values_load_exactly_or_fail_in_one_line(tmp_path_factory, field, value):
    arrays = {**make_fit().to_arrays(), field: np.asarray(value)}
    path = save_arrays(tmp_path_factory.mktemp("rf") / "x.npz", arrays)
    try:
        got = load_fit(path)
    except FitFileError as e:
        assert path in str(e) and "\n" not in str(e)
        return
    # loaded: every array field has its shape, a float dtype and finite values, and the
    # mutated field reads back as what was stored
    for name, shape in ARRAY_SHAPES.items():
        a = getattr(got, name)
        assert a.shape == shape and a.dtype in (np.float32, np.float64), name
        assert np.isfinite(a).all(), name
    stored = np.asarray(value)
    loaded = getattr(got, field)
    if isinstance(loaded, np.ndarray):
        assert np.array_equal(loaded, stored) and loaded.dtype == stored.dtype
    elif field == "image_size":
        assert loaded == tuple(int(v) for v in stored) and stored.dtype.kind in "iu"
    elif isinstance(loaded, str):
        assert loaded == str(stored) and stored.dtype.kind == "U"
    else:
        assert loaded == stored.item() and np.isfinite(loaded) and stored.dtype.kind in "fiu"


@given(shape=SHAPES, field=st.sampled_from(sorted(ARRAY_SHAPES)))
def test_any_other_shape_is_refused(tmp_path_factory, shape, field):
    assume(shape != ARRAY_SHAPES[field])
    arrays = {**make_fit().to_arrays(), field: np.zeros(shape, np.float32)}
    path = save_arrays(tmp_path_factory.mktemp("rs") / "x.npz", arrays)
    assert_one_line_error(path, "shape")


@given(data=st.data())
def test_nans_anywhere_are_refused(tmp_path_factory, data):
    field = data.draw(st.sampled_from(sorted(ARRAY_SHAPES)))
    arrays = make_fit().to_arrays()
    a = arrays[field].copy()
    idx = data.draw(st.tuples(*(st.integers(0, n - 1) for n in a.shape)))
    a[idx] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    path = save_arrays(tmp_path_factory.mktemp("rn") / "x.npz", {**arrays, field: a})
    assert_one_line_error(path, "non-finite")


@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1,
                      max_size=4), cut=st.integers(0, 10**6))
def test_damaged_bytes_fail_or_load_the_original(tmp_path_factory, flips, cut):
    """A flipped or truncated fit file either fails in one line or loads exactly the fit
    that was saved (the zip CRCs cover the arrays): never a silently different fit."""
    folder = tmp_path_factory.mktemp("rd")
    fit = make_fit()
    fit.save(folder / "x.npz")
    data = bytearray((folder / "x.npz").read_bytes())
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    data = data[: len(data) - cut % 64] if cut % 3 == 0 else data
    (folder / "x.npz").write_bytes(bytes(data))
    try:
        got = load_fit(folder / "x.npz")
    except FitFileError as e:
        assert "\n" not in str(e)
        return
    assert_same(got, fit)


@given(rel=st.text(st.sampled_from("ab./\\ .."), min_size=1, max_size=12))
def test_fit_paths_never_leave_save_dir(rel):
    for path in (fit_path_for(rel, "/save"), legacy_fit_path(rel, "/save")):
        assert os.path.normpath(path).startswith("/save" + os.sep), (rel, path)


@given(stem=st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
                    min_size=1, max_size=8).filter(lambda s: s not in (".", "..")),
       exts=st.lists(st.sampled_from([".jpg", ".png", ".JPG", ".jpeg", ""]), min_size=2,
                     max_size=5, unique=True))
def test_photos_differing_only_in_extension_get_distinct_fits(stem, exts):
    paths = [fit_path_for(f"d/{stem}{e}", "/save") for e in exts]
    assert len(set(paths)) == len(paths)
