"""The fitting CLI under bad input and faults (issue 14): name collisions, symlink loops,
shards that merge, non-UTF-8 names, a full disk, stale temp files, resume, retries, the
worker cap, list files. MediaPipe is replaced by fit_samples.FakeFitter (the fitting itself
is tested in test_fitting.py / test_batch_fit.py), so these run in seconds."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from fit_samples import use_fake_fitter, write_photo
from hypothesis import given
from hypothesis import strategies as st

from face3d import batch_fit
from face3d.fileio import temp_path_for
from face3d.fit import find_fit, fit_path_for, legacy_fit_path, load_fit


@pytest.fixture(autouse=True)
def fake_fitter(monkeypatch):
    use_fake_fitter(monkeypatch)


def fit_cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = batch_fit.main([*map(str, args), "--quiet"])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def read_lines(path) -> list[str]:
    return path.read_bytes().decode("utf-8", "surrogateescape").splitlines()


def npz_files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.npz"))


# ---------------------------------------------------------------- 1. names


def test_same_stem_different_extension_get_their_own_fits(tmp_path, capsys):
    write_photo(tmp_path / "in" / "face.jpg", 1)
    write_photo(tmp_path / "in" / "face.png", 2)
    rc, out, err = fit_cli(capsys, "--img", tmp_path / "in", "--save_dir", tmp_path / "out")
    assert rc == 0, err
    assert "fitted 2, skipped (already fitted) 0" in out
    assert npz_files(tmp_path / "out") == ["face.jpg.npz", "face.png.npz"]
    a, b = (load_fit(tmp_path / "out" / n) for n in ("face.jpg.npz", "face.png.npz"))
    assert not np.array_equal(a.vertices, b.vertices)
    rows = [ln.split()[0] for ln in read_lines(tmp_path / "out" / "realign_lmk")]
    assert rows == ["face.jpg", "face.png"]


def test_old_name_fits_are_read_when_unambiguous(tmp_path, capsys):
    """Fits of earlier versions (``face.npz``) still count, unless two photos could own it."""
    from fit_samples import make_fit

    write_photo(tmp_path / "in" / "solo.jpg", 1)
    write_photo(tmp_path / "in" / "twin.jpg", 2)
    write_photo(tmp_path / "in" / "twin.png", 3)
    out = tmp_path / "out"
    out.mkdir()
    old = make_fit(7)
    old.save(out / "solo.npz")
    old.save(out / "twin.npz")
    assert find_fit("solo.jpg", str(out), str(tmp_path / "in")) == str(out / "solo.npz")
    assert find_fit("twin.jpg", str(out), str(tmp_path / "in")) is None
    assert find_fit("solo.jpg", str(out)) is None  # no prefix: old names are not trusted
    rc, stdout, err = fit_cli(capsys, "--img", tmp_path / "in", "--save_dir", out)
    assert rc == 0, err
    assert "fitted 2, skipped (already fitted) 1" in stdout
    assert not (out / "solo.jpg.npz").exists()  # the old fit is used as it is
    assert (out / "twin.jpg.npz").exists() and (out / "twin.png.npz").exists()
    assert legacy_fit_path("a/b.c.jpg", "o") == os.path.join("o", "a", "b.c.npz")
    assert fit_path_for("a/b.c.jpg", "o") == os.path.join("o", "a", "b.c.jpg.npz")
    # x.jpg.png's old name, x.jpg.npz, is x.jpg's fit under the current name: not borrowed
    write_photo(tmp_path / "in" / "x.jpg", 4)
    write_photo(tmp_path / "in" / "x.jpg.png", 5)
    old.save(out / "x.jpg.npz")
    assert find_fit("x.jpg", str(out), str(tmp_path / "in")) == str(out / "x.jpg.npz")
    assert find_fit("x.jpg.png", str(out), str(tmp_path / "in")) is None


def test_symlink_loop_fits_each_photo_once(tmp_path, capsys):
    write_photo(tmp_path / "in" / "a.jpg", 1)
    write_photo(tmp_path / "in" / "sub" / "b.jpg", 2)
    os.symlink("..", tmp_path / "in" / "sub" / "loop")
    os.symlink("sub", tmp_path / "in" / "alias")  # a second way into sub/
    os.symlink("nowhere", tmp_path / "in" / "dangling")
    rc, out, err = fit_cli(capsys, "--img", tmp_path / "in", "--save_dir", tmp_path / "out")
    assert rc == 0, err
    assert "of 2 images" in out
    assert [ln.split()[0] for ln in read_lines(tmp_path / "out" / "realign_lmk")] == [
        "a.jpg", os.path.join("alias", "b.jpg")]  # sorted: alias/ comes before sub/


# ---------------------------------------------------------------- 2. shards


def people(tmp_path, n_people=3, per_person=3):
    names = [f"person{i}" for i in range(n_people)]
    rel = [f"{p}/{j}.png" for p in names for j in range(per_person)]
    for i, r in enumerate(rel):
        write_photo(tmp_path / "in" / r, i + 1)
    lst = tmp_path / "list.txt"
    lst.write_text("".join(r + "\n" for r in reversed(rel)))  # any order
    return lst


def labels(path) -> dict[str, str]:
    return {ln.split()[0]: ln.split()[1] for ln in read_lines(path)}


@pytest.mark.parametrize("n", [2, 3, 4, 7])
def test_shard_labels_equal_unsharded_labels(tmp_path, capsys, n):
    lst = people(tmp_path)
    args = ("--img_list", lst, "--img_prefix", tmp_path / "in")
    assert fit_cli(capsys, *args, "--save_dir", tmp_path / "all")[0] == 0
    merged = []
    for k in range(1, n + 1):
        rc, out, err = fit_cli(capsys, *args, "--save_dir", tmp_path / "sh", "--shard", f"{k}/{n}")
        assert rc == 0, err
        merged += read_lines(tmp_path / "sh" / f"realign_lmk.shard{k}of{n}")
    (tmp_path / "merged").write_text("".join(ln + "\n" for ln in merged))  # `cat` of shards
    assert labels(tmp_path / "merged") == labels(tmp_path / "all" / "realign_lmk")
    per_person = {}
    for rel, label in labels(tmp_path / "merged").items():
        per_person.setdefault(os.path.dirname(rel), set()).add(label)
    assert all(len(v) == 1 for v in per_person.values())
    assert len({next(iter(v)) for v in per_person.values()}) == 3  # one label, one person


def test_empty_shard_exits_0_with_a_message_and_empty_lists(tmp_path, capsys):
    write_photo(tmp_path / "in" / "a.png", 1)
    write_photo(tmp_path / "in" / "b.png", 2)
    rc, out, err = fit_cli(capsys, "--img", tmp_path / "in", "--save_dir", tmp_path / "out",
                           "--shard", "5/8")
    assert rc == 0, err
    assert "shard 5/8 of a list of 2 photos is empty" in out
    assert (tmp_path / "out" / "realign_lmk.shard5of8").read_text() == ""
    assert (tmp_path / "out" / "failures.txt.shard5of8").read_text() == ""


# ---------------------------------------------------------------- 3. list and report files


def test_non_utf8_file_names_round_trip(tmp_path, capsys):
    folder = tmp_path / "in"
    write_photo(folder / "plain.png", 1)
    latin1 = os.path.join(os.fsencode(folder), b"caf\xe9.png")
    shutil.copy(folder / "plain.png", latin1)
    write_photo(folder / "x.png", 3)
    shutil.move(folder / "x.png", os.path.join(os.fsencode(folder), b"na\xefve.png"))
    out = tmp_path / "out"
    rc, stdout, err = fit_cli(capsys, "--img", folder, "--save_dir", out)
    assert rc == 0, err
    assert "fitted 3" in stdout
    raw = (out / "realign_lmk").read_bytes()
    assert b"caf\xe9.png 0 " in raw and len(raw.splitlines()) == 3
    # the list names the same files again: a re-run through it skips all three
    rc, stdout, err = fit_cli(capsys, "--img_list", out / "realign_lmk", "--img_prefix", folder,
                              "--save_dir", out)
    assert rc == 0 and "skipped (already fitted) 3" in stdout, err
    assert os.path.exists(os.path.join(os.fsencode(out), b"caf\xe9.png.npz"))


@contextlib.contextmanager
def full_disk_for(monkeypatch, name_prefix: str, how: str):
    """Writing files whose name starts with ``name_prefix`` fails with ENOSPC: by the
    writer raising it (``how='raise'``), or by writing into /dev/full (``how='devfull'``)."""
    real = batch_fit.atomic_write

    @contextlib.contextmanager
    def writer(path, mode="w", **kw):
        if not os.path.basename(path).startswith(name_prefix):
            with real(path, mode, **kw) as f:
                yield f
        elif how == "devfull":
            with open("/dev/full", mode, **kw) as f:
                yield f
                f.flush()
        else:
            with real(path, mode, **kw) as f:
                f.write("partial record\n")
                raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(batch_fit, "atomic_write", writer)
    yield
    monkeypatch.setattr(batch_fit, "atomic_write", real)


@pytest.mark.parametrize("target", ["failures.txt", "realign_lmk"])
@pytest.mark.parametrize("how", ["raise", "devfull"])
def test_full_disk_keeps_previous_lists_and_says_so_in_one_line(tmp_path, capsys, monkeypatch,
                                                               target, how):
    for i in range(3):
        write_photo(tmp_path / "in" / f"ok{i}.png", i + 1)
    for i in range(7):
        write_photo(tmp_path / "in" / f"flat{i}.png", flat=True)
    out = tmp_path / "out"
    assert fit_cli(capsys, "--img", tmp_path / "in", "--save_dir", out)[0] == 0
    before = {n: (out / n).read_bytes() for n in ("failures.txt", "realign_lmk")}
    assert len(before["failures.txt"].splitlines()) == 7
    write_photo(tmp_path / "in" / "new.png", 9)
    with full_disk_for(monkeypatch, target, how):
        rc, stdout, err = fit_cli(capsys, "--img", tmp_path / "in", "--save_dir", out)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], err
    assert lines[0].startswith("error: could not write to")
    assert (out / target).read_bytes() == before[target]  # never empty or truncated
    assert not [p for p in out.rglob(".tmp_*")]
    # once there is space again the run resumes: the new photo's fit was kept
    rc, stdout, err = fit_cli(capsys, "--img", tmp_path / "in", "--save_dir", out)
    assert rc == 0 and "fitted 0, skipped (already fitted) 4, failed 7" in stdout


def test_full_disk_for_one_fit_fails_that_photo_only(tmp_path, capsys, monkeypatch):
    from face3d.fit import Fit

    for i in range(3):
        write_photo(tmp_path / "in" / f"{i}.png", i + 1)
    real, calls = Fit.save, []

    def save(self, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, path)

    monkeypatch.setattr(Fit, "save", save)
    rc, out, err = fit_cli(capsys, "--img", tmp_path / "in", "--save_dir", tmp_path / "out")
    assert rc == 0 and "fitted 2, skipped (already fitted) 0, failed 1" in out
    failures = read_lines(tmp_path / "out" / "failures.txt")
    assert failures == ["1.png\tOSError: [Errno 28] No space left on device"]


def test_stale_temp_files_are_removed_live_ones_kept(tmp_path, capsys):
    write_photo(tmp_path / "in" / "sub" / "a.png", 1)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    dead = temp_path_for(str(out / "sub" / "a.png.npz")).replace(f"~{os.getpid()}~",
                                                                "~999999999~")
    old_style = out / ".tmp_realign_lmk.0123456789ab"  # an older version's name
    recent_old_style = out / "sub" / ".tmp_b.npz.0123456789ab"
    live = temp_path_for(str(out / "sub" / "c.png.npz")).replace(f"~{os.getpid()}~",
                                                                f"~{os.getppid()}~")
    foreign = out / ".tmp_someone_elses_notes"  # not named like ours: never touched
    for p in (dead, old_style, recent_old_style, live, foreign):
        Path(p).write_text("half written")
    for p in (old_style, foreign):
        os.utime(p, (time.time() - 7200,) * 2)
    assert fit_cli(capsys, "--img", tmp_path / "in", "--save_dir", out)[0] == 0
    assert not os.path.exists(dead) and not old_style.exists()
    assert recent_old_style.exists()  # could be a live writer of an older version
    assert os.path.exists(live)  # a live process's write in progress (another shard)
    assert foreign.exists()


def test_resume_after_lists_were_lost(tmp_path, capsys):
    lst = people(tmp_path, 2, 2)
    write_photo(tmp_path / "in" / "person0" / "flat.png", flat=True)
    with open(lst, "a") as f:
        f.write("person0/flat.png\n")
    args = ("--img_list", lst, "--img_prefix", tmp_path / "in")
    assert fit_cli(capsys, *args, "--save_dir", tmp_path / "ref")[0] == 0
    shutil.copytree(tmp_path / "ref", tmp_path / "out")
    (tmp_path / "out" / "realign_lmk").unlink()
    (tmp_path / "out" / "failures.txt").unlink()
    damaged = tmp_path / "out" / "person1" / "0.png.npz"
    damaged.write_bytes(damaged.read_bytes()[:200])
    rc, out, err = fit_cli(capsys, *args, "--save_dir", tmp_path / "out")
    assert rc == 0 and "fitted 1, skipped (already fitted) 3, failed 1" in out
    for name in ("realign_lmk", "failures.txt"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


def test_invalid_but_readable_fit_is_refitted_not_skipped(tmp_path, capsys):
    write_photo(tmp_path / "in" / "a.png", 1)
    out = tmp_path / "out"
    assert fit_cli(capsys, "--img", tmp_path / "in", "--save_dir", out)[0] == 0
    arrays = dict(np.load(out / "a.png.npz"))
    arrays["vertices"] = np.full((468, 3), np.nan, np.float32)
    with open(out / "a.png.npz", "wb") as f:
        np.savez(f, **arrays)
    rc, stdout, err = fit_cli(capsys, "--img", tmp_path / "in", "--save_dir", out)
    assert rc == 0 and "fitted 1, skipped (already fitted) 0" in stdout
    load_fit(out / "a.png.npz")


def test_a_failed_photo_is_retried_by_the_next_run(tmp_path, capsys):
    photo = tmp_path / "in" / "a.png"
    photo.parent.mkdir()
    photo.write_bytes(b"\x89PNG\r\n\x1a\n truncated while being copied")
    out = tmp_path / "out"
    rc, stdout, err = fit_cli(capsys, "--img", tmp_path / "in", "--save_dir", out)
    assert rc == 1 and "failed 1" in stdout
    assert "a.png\t" in (out / "failures.txt").read_text()
    write_photo(photo, 5)  # the copy completed
    rc, stdout, err = fit_cli(capsys, "--img", tmp_path / "in", "--save_dir", out)
    assert rc == 0 and "fitted 1, skipped (already fitted) 0, failed 0" in stdout
    assert (out / "failures.txt").read_text() == ""


# ---------------------------------------------------------------- 9. workers, arguments


def test_save_dir_below_a_file_is_one_line_exit_1(tmp_path, capsys):
    write_photo(tmp_path / "photo.png", 1)
    rc, out, err = fit_cli(capsys, "--img", tmp_path / "photo.png", "--save_dir",
                           tmp_path / "photo.png" / "out")
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not write to "), err
    assert "Not a directory" in lines[0] and "free space" not in lines[0]


def test_workers_capped_at_the_available_cores(tmp_path, capsys, monkeypatch):
    for i in range(6):
        write_photo(tmp_path / "in" / f"{i}.png", i + 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    started = []

    class Pool:  # records the size; runs in-process
        def __init__(self, n, initializer, initargs):
            started.append(n)
            initializer(*initargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def imap(self, fn, items, chunksize=1):
            return map(fn, items)

    monkeypatch.setattr(batch_fit.mp, "get_context",
                        lambda kind: type("Ctx", (), {"Pool": staticmethod(Pool)}))
    rc, out, err = fit_cli(capsys, "--img", tmp_path / "in", "--save_dir", tmp_path / "out",
                           "--workers", 64)
    assert rc == 0 and started == [2]
    assert err.strip() == ("note: --workers 64 capped at 2, the CPU cores available to this "
                           "process")
    assert batch_fit.cap_workers(2, 6) == 2 and batch_fit.cap_workers(8, 1) == 1


@pytest.mark.parametrize("setup, args, needle", [
    ("folder", ["--img_list", "{d}/lists"], "image list is a folder, not a list file"),
    ("folder", ["--img_list", "{d}/lists"], "use --img {d}/lists"),
    ("", ["--img_list", "{d}/none.txt"], "image list not found"),
    ("binary", ["--img_list", "{d}/photo.png"], "not a text list of paths"),
    ("savefile", ["--img", "{d}/photo.png", "--save_dir", "{d}/photo.png"],
     "--save_dir is a file"),
    ("", ["--img", "{d}/photo.png", "--max_side", "0"], "--max_side must be a positive"),
])
def test_bad_list_arguments_one_line(tmp_path, capsys, setup, args, needle):
    (tmp_path / "lists").mkdir()
    write_photo(tmp_path / "photo.png", 1)
    args = [a.format(d=tmp_path) for a in args]
    if "--save_dir" not in args:
        args += ["--save_dir", str(tmp_path / "out")]
    rc, out, err = fit_cli(capsys, *args)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert needle.format(d=tmp_path) in lines[0]


# ---------------------------------------------------------------- read_list, property-based

# Path characters: anything printable, spaces included, but no tab (the column separator),
# no line breaks, no controls.
PATH_CHARS = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"),
                           blacklist_characters="\t")
NAMES = st.text(PATH_CHARS, min_size=1, max_size=12).map(lambda s: s.strip() + ".jpg").filter(
    lambda s: not s.startswith("#") and s[0] not in " \f\v")


@given(paths=st.lists(NAMES, min_size=0, max_size=8),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
       newline=st.sampled_from(["\n", "\r\n", "\r"]),
       pads=st.lists(st.sampled_from(["", " ", "\t", "  \t "]), min_size=16, max_size=16),
       blanks=st.lists(st.booleans(), min_size=8, max_size=8),
       columns=st.booleans())
def test_read_list_returns_exactly_the_paths(tmp_path_factory, paths, encoding, newline,
                                             pads, blanks, columns):
    lines = []
    for i, p in enumerate(paths):
        if blanks[i]:
            lines += ["", "# a comment", pads[i]]
        extra = " 3 1.5 2 3 4 5 6 7 8 9 10" if columns else ""
        lines.append(pads[i] + p + extra + pads[8 + i])
    text = newline.join(lines) + (newline if lines else "")
    path = tmp_path_factory.mktemp("rl") / "list.txt"
    path.write_bytes(text.encode(encoding))
    assert batch_fit.read_list(str(path)) == paths


@given(names=st.lists(st.binary(min_size=1, max_size=10).filter(
    lambda b: not set(b) & set(range(32)) and not b.strip().startswith(b"#")
    and b.strip() == b and b != b"\x7f"), max_size=6))
def test_read_list_keeps_non_utf8_names_byte_for_byte(tmp_path_factory, names):
    names = [n for n in names if 127 not in n]
    if names and names[0].startswith(b"\xef\xbb\xbf"):
        names[0] = b"x" + names[0]  # a list's leading UTF-8 BOM is a BOM, not part of a name
    path = tmp_path_factory.mktemp("rb") / "list.txt"
    path.write_bytes(b"".join(n + b".jpg\n" for n in names))
    got = batch_fit.read_list(str(path))
    assert [os.fsencode(g) for g in got] == [n + b".jpg" for n in names]


@given(content=st.binary(max_size=400))
def test_read_list_on_random_bytes(tmp_path_factory, content):
    """Random bytes: a list of clean one-line paths, or one InputListError line."""
    path = tmp_path_factory.mktemp("rr") / "list.txt"
    path.write_bytes(content)
    try:
        got = batch_fit.read_list(str(path))
    except batch_fit.InputListError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        return
    for p in got:
        assert p and p == p.strip(" \t") and not p.startswith("#")
        assert not any(c in p for c in "\n\r\t\x00")
