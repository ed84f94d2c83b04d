"""prepare_dataset (the training dataset's fitting pass): failures are retried when the
photo changes, excluded photos are counted per reason with how to retry, lists merge
without duplicates or stale failures, and an interrupted merge is finished next time.
MediaPipe is replaced by fit_samples.FakeFitter."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fit_samples import use_fake_fitter, write_photo

from data.allface_dataset import _merge_lists, prepare_dataset, read_failures, reason_kind
from data.registry import adhoc_dataset
from face3d.batch_fit import read_list


@pytest.fixture(autouse=True)
def fake_fitter(monkeypatch):
    use_fake_fitter(monkeypatch)


def dataset(tmp_path):
    root = tmp_path / "ds"
    write_photo(root / "ann" / "0.png", 1)
    write_photo(root / "ann" / "1.png", 2)
    write_photo(root / "bob" / "0.png", 3)
    write_photo(root / "bob" / "flat.png", flat=True)  # "no face found"
    whole = write_photo(root / "cid" / "0.png", 4).read_bytes()
    (root / "cid" / "0.png").write_bytes(whole[: len(whole) // 3])  # a copy in progress
    return root, adhoc_dataset(str(root))


def test_failed_photo_is_retried_once_it_changes_and_exclusions_are_counted(tmp_path,
                                                                            capsys):
    root, entry = dataset(tmp_path)
    usable = prepare_dataset(entry, "ds", progress=False)
    out = capsys.readouterr().out
    assert usable == ["ann/0.png", "ann/1.png", "bob/0.png"]
    assert "fitting 5 photos" in out
    failed_file = os.path.join(entry["fits_dir"], "failures.txt")
    summary = [ln for ln in out.splitlines() if "excluded" in ln]
    assert summary == [
        f"dataset 'ds': 2 of 5 photos excluded (1 no face found, 1 unreadable or truncated "
        f"image); they are listed in {failed_file}, retried when a photo changes; to retry "
        f"all of them, delete that file"], out

    # a second start: nothing is refitted, the exclusions are said again
    assert prepare_dataset(entry, "ds", progress=False) == usable
    out = capsys.readouterr().out
    assert "fitting" not in out and "2 of 5 photos excluded" in out

    # the copy completed: that photo (only) is retried and leaves failures.txt
    time.sleep(0.02)
    write_photo(root / "cid" / "0.png", 4)
    usable = prepare_dataset(entry, "ds", progress=False)
    out = capsys.readouterr().out
    assert "fitting 1 photos (1 failed before and changed since)" in out
    assert usable == ["ann/0.png", "ann/1.png", "bob/0.png", "cid/0.png"]
    assert list(read_failures(failed_file)) == ["bob/flat.png"]
    assert "1 of 5 photos excluded (1 no face found)" in out
    realign = read_list(entry["landmark_list"])
    assert sorted(realign) == usable  # each once, no duplicates
    assert not [f for f in os.listdir(entry["fits_dir"]) if f.endswith(".new")]

    # deleting failures.txt retries everything that has no fit
    os.remove(failed_file)
    prepare_dataset(entry, "ds", progress=False)
    assert "fitting 1 photos" in capsys.readouterr().out


def test_labels_stay_those_of_the_whole_list_across_passes(tmp_path, capsys):
    root, entry = dataset(tmp_path)
    prepare_dataset(entry, "ds", progress=False, end=2)  # a slice first
    prepare_dataset(entry, "ds", progress=False)  # then the rest
    with open(entry["landmark_list"]) as f:
        labels = {ln.split()[0]: int(ln.split()[1]) for ln in f}
    assert labels == {"ann/0.png": 0, "ann/1.png": 0, "bob/0.png": 1}


def test_an_interrupted_merge_is_finished_by_the_next_start(tmp_path, capsys):
    root, entry = dataset(tmp_path)
    fits = entry["fits_dir"]
    prepare_dataset(entry, "ds", progress=False)
    before = Path(entry["landmark_list"]).read_text()
    # as if killed after a fitting pass wrote its .new lists, before merging them
    os.rename(entry["landmark_list"], entry["landmark_list"] + ".new")
    with open(os.path.join(fits, "failures.txt"), "w") as f:
        f.write("ann/0.png\tstale: fitted since\n")
    prepare_dataset(entry, "ds", progress=False)
    assert Path(entry["landmark_list"]).read_text() == before
    assert "ann/0.png" not in read_failures(os.path.join(fits, "failures.txt"))
    _merge_lists(fits)  # nothing left to merge: a no-op
    assert Path(entry["landmark_list"]).read_text() == before


@pytest.mark.parametrize("reason, kind", [
    ("no face found", "no face found"),
    ("unreadable or truncated image (image file is truncated): /x/a.jpg",
     "unreadable or truncated image"),
    ("file not found: /x/a.jpg", "file not found"),
    ("OSError: [Errno 28] No space left on device", "OSError"),
    ("implausible face mesh (residual 0.40 > 0.25)", "implausible face mesh"),
    ("", "unknown"),
])
def test_reason_kinds(reason, kind):
    assert reason_kind(reason) == kind


def test_only_an_older_fit_format_stops_the_dataset(tmp_path, capsys):
    """An older format means every fit of that run needs a refit: one error up front. A
    damaged first fit is that photo's problem alone (it fails where it is used)."""
    import numpy as np

    from data.allface_dataset import DatasetError
    from face3d.fit import fit_path_for

    root, entry = dataset(tmp_path)
    prepare_dataset(entry, "ds", progress=False)
    first = fit_path_for("ann/0.png", entry["fits_dir"])
    with np.load(first) as z:
        arrays = dict(z)
    np.savez(first, **{**arrays, "vertices": np.zeros((400, 3), np.float32)})
    assert prepare_dataset(entry, "ds", progress=False) == ["ann/0.png", "ann/1.png",
                                                            "bob/0.png"]
    np.savez(first, **{**arrays, "format_version": np.asarray(1)})
    with pytest.raises(DatasetError, match="format 1.*refit"):
        prepare_dataset(entry, "ds", progress=False)
