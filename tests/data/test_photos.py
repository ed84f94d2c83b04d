"""data.photos: the inputs of test.py and evaluate.py are each photo once, under a name no
other photo of the run has, and old-name fit files are found."""

from __future__ import annotations

import os

from fit_samples import make_fit, write_photo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.photos import dataset_photos, photos_in


def test_symlink_loop_and_aliases_give_each_photo_once(tmp_path):
    write_photo(tmp_path / "in" / "a.jpg", 1)
    write_photo(tmp_path / "in" / "sub" / "b.jpg", 2)
    os.symlink("..", tmp_path / "in" / "sub" / "loop")
    os.symlink("a.jpg", tmp_path / "in" / "a_link.jpg")
    os.symlink("sub", tmp_path / "in" / "sub2")
    photos = photos_in([tmp_path / "in", tmp_path / "in" / "a.jpg"])
    assert [p.rel for p in photos] == ["a.jpg", os.path.join("sub", "b.jpg")]
    assert len({os.path.realpath(p.path) for p in photos}) == 2


def test_names_are_unique_even_without_extension(tmp_path):
    for i, rel in enumerate(["x/face.jpg", "y/face.jpg", "z/face.png", "z/Face.JPG"]):
        write_photo(tmp_path / rel, i + 1)
    given = [tmp_path / r for r in ["x/face.jpg", "y/face.jpg", "z/face.png", "z/Face.JPG"]]
    photos = photos_in(given + [tmp_path / "x/face.jpg"])  # the first one again
    assert [p.rel for p in photos] == ["face.jpg", "face~2.jpg", "face~3.png", "Face~4.JPG"]
    assert [p.path for p in photos] == [str(g) for g in given]
    stems = [os.path.splitext(p.rel)[0].lower() for p in photos]
    assert len(set(stems)) == len(stems)


def test_missing_files_are_kept_once_for_a_per_photo_error(tmp_path):
    photos = photos_in([tmp_path / "nope.jpg", tmp_path / "nope.jpg"])
    assert [p.rel for p in photos] == ["nope.jpg"]


def test_dataset_photos_find_old_and_new_fit_names(tmp_path):
    root = tmp_path / "ds"
    write_photo(root / "a" / "solo.jpg", 1)
    write_photo(root / "a" / "twin.jpg", 2)
    write_photo(root / "a" / "twin.png", 3)
    write_photo(root / "a" / "new.jpg", 4)
    fits = root / "fits" / "a"
    fits.mkdir(parents=True)
    for name in ("solo.npz", "twin.npz", "new.jpg.npz"):
        make_fit().save(fits / name)
    got = {p.rel: p.fit_path for p in dataset_photos(dataroot=str(root))}
    assert got == {"a/new.jpg": str(fits / "new.jpg.npz"), "a/solo.jpg": str(fits / "solo.npz"),
                   "a/twin.jpg": None, "a/twin.png": None}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.tuples(st.sampled_from(["x", "y", "x/sub"]),
                                st.sampled_from(["face", "Face", "a"]),
                                st.sampled_from([".jpg", ".png", ".JPG"])),
                      min_size=1, max_size=8))
def test_any_mix_of_names_gives_unique_names_and_each_file_once(tmp_path_factory, picks):
    root = tmp_path_factory.mktemp("mix")
    given = [root / folder / (stem + ext) for folder, stem, ext in picks]
    for p in given:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
    photos = photos_in(given)
    assert len({os.path.realpath(p.path) for p in photos}) == len(photos)
    assert {os.path.realpath(p.path) for p in photos} == {os.path.realpath(g) for g in given}
    stems = [os.path.splitext(p.rel)[0].lower() for p in photos]
    assert len(set(stems)) == len(stems)
    for p in photos:  # the extension is the photo's own
        assert os.path.splitext(p.rel)[1] == os.path.splitext(p.path)[1]
