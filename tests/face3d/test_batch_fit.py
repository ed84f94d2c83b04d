"""The batch fitting CLI (3ddfa/inference.py = face3d.batch_fit): odd and bad inputs, list
files, output files, resume, shards, workers, exit codes. Most cases call
``face3d.batch_fit.main`` in-process (one MediaPipe graph for all); a few run the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face3d import batch_fit
from face3d.fit import fit_path_for, load_fit
from face3d.imageio import read_image

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "3ddfa" / "inference.py"
FIT_FIELDS = ("vertices", "iris", "landmarks68", "landmarks5", "rotation", "translation")


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLI), *map(str, args), "--quiet"], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def run_main(capsys, *args) -> tuple[int, str, str]:
    """``batch_fit.main`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        rc = batch_fit.main([*map(str, args), "--quiet"])
    except SystemExit as e:  # argparse errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def summary(out: str) -> dict:
    """Counts from the summary line 'fitted F, skipped (already fitted) S, failed X of N'."""
    line = next(ln for ln in out.splitlines() if ln.startswith("fitted "))
    words = line.replace(",", "").split()
    return {"fitted": int(words[1]), "skipped": int(words[5]), "failed": int(words[7]),
            "total": int(words[9])}


def read_failures(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    assert all(ln.count("\t") == 1 for ln in lines), lines
    return dict(ln.split("\t") for ln in lines)


def read_realign(path: Path) -> list[list[str]]:
    return [ln.split() for ln in path.read_text().splitlines()]


def write_list(path: Path, entries) -> Path:
    path.write_text("".join(f"{e}\n" for e in entries))
    return path


# ---------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def photos(tmp_path_factory, example_photos) -> Path:
    """Odd-but-valid and bad inputs, built from the example photos."""
    import skimage.data

    d = tmp_path_factory.mktemp("photos")
    astro, hopper = example_photos["astronaut.png"], example_photos["grace_hopper.jpg"]
    im = Image.fromarray(astro)
    im.save(d / "plain.png")
    im.convert("L").save(d / "gray.png")
    im.convert("RGBA").save(d / "rgba.png")
    im.convert("P").save(d / "palette.png")
    im.convert("CMYK").save(d / "cmyk.jpg", quality=95)
    gray16 = np.asarray(im.convert("L")).astype(np.uint16) * 257
    Image.fromarray(gray16).save(d / "gray16.png")
    assert Image.open(d / "gray16.png").mode == "I;16"
    # EXIF: pixels stored turned 90 degrees counter-clockwise, Orientation 6 = "turn 90
    # clockwise to display" (a camera held sideways)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(hopper, 1)).save(d / "exif_rotated.jpg", exif=exif.tobytes(),
                                              quality=95)
    Image.fromarray(hopper).save(d / "upright.jpg", quality=95)
    # two faces side by side; Grace Hopper's is the larger
    import cv2

    left = astro[20:300, 90:370]
    right = cv2.resize(hopper[40:440, 60:460], (280, 280), interpolation=cv2.INTER_AREA)
    Image.fromarray(np.concatenate([left, right], 1)).save(d / "two_faces.png")
    # bad ones
    (d / "notes.jpg").write_text("this is not a photo\n")
    jpeg = (d / "upright.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (d / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (1, 1), (128, 128, 128)).save(d / "tiny.png")
    Image.fromarray(skimage.data.coffee()).save(d / "coffee.png")
    return d


ODD = ["gray.png", "rgba.png", "palette.png", "gray16.png", "cmyk.jpg"]


def test_read_image_handles_modes_and_exif(photos):
    plain = read_image(photos / "plain.png")
    for name in ODD:
        rgb = read_image(photos / name)
        assert rgb.shape == plain.shape and rgb.dtype == np.uint8, name
        # same picture, up to colour: the gray versions match the plain one's luminance
        lum = rgb.astype(float).mean(2)
        assert np.abs(lum - plain.astype(float).mean(2)).mean() < 12, name
    upright = read_image(photos / "upright.jpg")
    rotated = read_image(photos / "exif_rotated.jpg")
    assert rotated.shape == upright.shape == (600, 512, 3)
    assert np.abs(rotated.astype(float) - upright).mean() < 3  # JPEG noise only


def test_unusual_but_valid_images_are_fitted(tmp_path, photos, capsys):
    names = ["plain.png", *ODD, "upright.jpg", "exif_rotated.jpg"]
    lst = write_list(tmp_path / "list.txt", names)
    rc, out, err = run_main(capsys, "--img_list", lst, "--img_prefix", photos,
                            "--save_dir", tmp_path / "out")
    assert rc == 0, err
    assert summary(out) == {"fitted": len(names), "skipped": 0, "failed": 0,
                            "total": len(names)}
    fits = {n: load_fit(fit_path_for(n, str(tmp_path / "out"))) for n in names}
    base = fits["plain.png"].landmarks68
    for name in ODD:
        err_px = np.linalg.norm(fits[name].landmarks68 - base, axis=1).mean()
        assert err_px < 3.0, (name, err_px)
    exif, upright = fits["exif_rotated.jpg"], fits["upright.jpg"]
    assert exif.image_size == upright.image_size == (600, 512)
    err_px = np.linalg.norm(exif.landmarks68 - upright.landmarks68, axis=1)
    assert err_px.mean() < 2.0 and err_px.max() < 5.0, err_px
    assert abs(exif.roll - upright.roll) < 2.0


# ---------------------------------------------------------------- bad inputs


BAD = {
    "missing.jpg": "not found",
    "notes.jpg": "not an image",
    "truncated.jpg": "truncated",
    "empty.jpg": "empty",
    "tiny.png": "too small",
    "coffee.png": "no face",
}


def test_bad_inputs_are_reported_and_the_batch_goes_on(tmp_path, photos, capsys):
    entries = ["notes.jpg", "plain.png", "missing.jpg", "truncated.jpg", "two_faces.png",
               "empty.jpg", "tiny.png", "coffee.png", "upright.jpg"]
    lst = write_list(tmp_path / "list.txt", entries)
    out_dir = tmp_path / "out"
    rc, out, err = run_main(capsys, "--img_list", lst, "--img_prefix", photos,
                            "--save_dir", out_dir)
    assert rc == 0, err
    assert summary(out) == {"fitted": 3, "skipped": 0, "failed": 6, "total": 9}
    assert "failures.txt" in out
    failures = read_failures(out_dir / "failures.txt")
    assert list(failures) == [e for e in entries if e in BAD]  # in list order
    for name, reason in failures.items():
        assert BAD[name] in reason.lower(), (name, reason)
        assert "Traceback" not in reason and len(reason) < 300, reason
    realign = read_realign(out_dir / "realign_lmk")
    assert [r[0] for r in realign] == ["plain.png", "two_faces.png", "upright.jpg"]
    for name in BAD:
        assert not os.path.exists(fit_path_for(name, str(out_dir)))
    # two faces: fitted, the larger one (Grace Hopper, right half) kept, both counted
    two = load_fit(fit_path_for("two_faces.png", str(out_dir)))
    assert two.num_faces == 2
    assert (two.landmarks68[:, 0] > 280).all()


def test_huge_image_fitted_with_bounded_memory(tmp_path, example_photos):
    """An 8000x8000 photo: detection runs on a 1920 px copy; the fit is in the original
    pixels; peak memory (max RSS of the whole process) stays well under 2 GiB."""
    import cv2

    side, scale = 8000, 8000 / 512
    big = cv2.resize(example_photos["astronaut.png"], (side, side),
                     interpolation=cv2.INTER_LINEAR)
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=80)
    del big
    code = (
        "import json, resource, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from face3d.batch_fit import main\n"
        "rc = main(sys.argv[1:])\n"
        "print(json.dumps({'rc': rc, 'maxrss_kb': "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, "--img", str(tmp_path / "big.jpg"),
                           "--save_dir", str(tmp_path / "out"), "--quiet"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    peak_gib = res["maxrss_kb"] / 2**20
    print(f"\n8000x8000 JPEG: peak RSS {peak_gib:.2f} GiB")
    assert res["rc"] == 0 and peak_gib < 2.0
    fit = load_fit(tmp_path / "out" / "big.jpg.npz")
    assert fit.image_size == (side, side)
    eye_l, eye_r = fit.landmarks5[:2] / scale  # back in astronaut.png pixels
    assert np.linalg.norm(eye_l - (204, 101)) < 4 and np.linalg.norm(eye_r - (247, 104)) < 4


# ---------------------------------------------------------------- list files


def test_list_file_line_endings_comments_blanks(tmp_path, photos, capsys):
    text = ("\ufeff# photos to fit\r\n\r\nplain.png\r\n  upright.jpg 3 1 2 3 4 5 6 7 8 9 10\r\n"
            "   \r\n# gone:\r\nmissing.jpg\r\n\tgray.png\t\r\n")
    lst = tmp_path / "list.txt"
    lst.write_bytes(text.encode("utf-8"))
    assert batch_fit.read_list(str(lst)) == ["plain.png", "upright.jpg", "missing.jpg",
                                             "gray.png"]
    rc, out, err = run_main(capsys, "--img_list", lst, "--img_prefix", photos,
                            "--save_dir", tmp_path / "out")
    assert rc == 0, err
    assert summary(out) == {"fitted": 3, "skipped": 0, "failed": 1, "total": 4}
    assert list(read_failures(tmp_path / "out" / "failures.txt")) == ["missing.jpg"]


@pytest.mark.parametrize("line, path", [
    ("plain.png", "plain.png"),
    ("my photos/face one.png", "my photos/face one.png"),
    ("my photos/face one.png 0 12.5 30 -4 1e2 5 6 7 8 9 10", "my photos/face one.png"),
    ("a  b.jpg\tsome label", "a  b.jpg"),
    ("2019 trip/42.jpg 7", "2019 trip/42.jpg"),
    ("123 4", "123"),  # the first column is always part of the path
])
def test_list_lines_keep_spaces_and_drop_numeric_columns(line, path):
    assert batch_fit.list_path_of(line) == path


def test_paths_with_spaces_fit_and_round_trip_through_realign_lmk(tmp_path, example_photos,
                                                                  capsys):
    folder = tmp_path / "my photos"
    folder.mkdir()
    Image.fromarray(example_photos["astronaut.png"]).save(folder / "the astronaut.png")
    lst = tmp_path / "list.txt"
    lst.write_text("my photos/the astronaut.png\n")
    out_dir = tmp_path / "out"
    rc, out, err = run_main(capsys, "--img_list", lst, "--img_prefix", tmp_path,
                            "--save_dir", out_dir)
    assert rc == 0, err
    assert summary(out)["fitted"] == 1
    assert (out_dir / "my photos" / "the astronaut.png.npz").is_file()
    assert batch_fit.read_list(str(out_dir / "realign_lmk")) == ["my photos/the astronaut.png"]


def test_list_prefix_defaults_to_the_list_folder(tmp_path, example_dir, capsys):
    rc, out, err = run_main(capsys, "--img_list", example_dir / "file_list.txt",
                            "--save_dir", tmp_path / "out")
    assert rc == 0, err
    assert summary(out)["fitted"] == 2


def test_paths_never_leave_save_dir(tmp_path, photos, capsys):
    lst = write_list(tmp_path / "list.txt", [photos / "plain.png", "../photos_x/none.jpg"])
    out_dir = tmp_path / "out"
    before = sorted(photos.rglob("*"))
    rc, out, err = run_main(capsys, "--img_list", lst, "--img_prefix", photos,
                            "--save_dir", out_dir, "--vis")
    assert rc == 0, err
    assert sorted(photos.rglob("*")) == before  # nothing written next to the photos
    written = [p for p in tmp_path.rglob("*") if p.suffix in (".npz", ".jpg")]
    assert len(written) == 2 and all(out_dir in p.parents for p in written), written


# ---------------------------------------------------------------- output, resume, workers


@pytest.fixture(scope="module")
def people_list(request, tmp_path_factory, example_photos):
    """(prefix, list file, relpaths): six photos of three people (two each, one folder per
    person) listed in a scrambled order. LFW photos when present, else variants of the
    example photos."""
    tmp = tmp_path_factory.mktemp("people")
    try:
        prefix = request.getfixturevalue("lfw_dir")
        people = {}
        for p in request.getfixturevalue("lfw_sample")(400, seed=5):
            if len(sorted(p.parent.glob("*.jpg"))) >= 2 and p.parent.name not in people:
                people[p.parent.name] = sorted(p.parent.glob("*.jpg"))[:2]
            if len(people) == 3:
                break
        rel = [str(p.relative_to(prefix)) for ps in people.values() for p in ps]
    except pytest.skip.Exception:
        prefix, rel = tmp / "photos", []
        variants = {"astro": example_photos["astronaut.png"][:400],
                    "hopper": example_photos["grace_hopper.jpg"][50:],
                    "astro_wide": example_photos["astronaut.png"][:, 40:]}
        for person, rgb in variants.items():
            (prefix / person).mkdir(parents=True)
            for i, img in enumerate((rgb, rgb[:, ::-1])):
                Image.fromarray(np.ascontiguousarray(img)).save(prefix / person / f"{i}.png")
                rel.append(f"{person}/{i}.png")
    order = [rel[i] for i in (3, 0, 5, 1, 4, 2)]
    return prefix, write_list(tmp / "list.txt", order), order


def test_cli_realign_lmk_resume_overwrite_and_workers(tmp_path, people_list, capsys):
    prefix, lst, order = people_list
    out2 = tmp_path / "w2"
    proc = cli("--img_list", lst, "--img_prefix", prefix, "--save_dir", out2, "--workers", 2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert summary(proc.stdout) == {"fitted": 6, "skipped": 0, "failed": 0, "total": 6}
    assert (out2 / "failures.txt").read_text() == ""

    # realign_lmk: `relpath label x1 y1 ... x5 y5`, one line per photo, in list order,
    # label = index of the person's folder among the sorted folders
    rows = read_realign(out2 / "realign_lmk")
    assert [r[0] for r in rows] == order
    folders = sorted({os.path.dirname(r) for r in order})
    for r in rows:
        assert len(r) == 12
        assert int(r[1]) == folders.index(os.path.dirname(r[0]))
        fit = load_fit(fit_path_for(r[0], str(out2)))
        np.testing.assert_allclose(np.array(r[2:], float).reshape(5, 2), fit.landmarks5,
                                   atol=0.006)

    # --workers 2 gives the same fits as --workers 1
    out1 = tmp_path / "w1"
    rc, out, err = run_main(capsys, "--img_list", lst, "--img_prefix", prefix,
                            "--save_dir", out1)
    assert rc == 0, err
    for rel in order:
        a, b = load_fit(fit_path_for(rel, str(out1))), load_fit(fit_path_for(rel, str(out2)))
        for k in FIT_FIELDS:
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=f"{rel} {k}")
        assert (a.yaw, a.pitch, a.roll, a.scale) == (b.yaw, b.pitch, b.roll, b.scale)
    assert (out1 / "realign_lmk").read_text() == (out2 / "realign_lmk").read_text()

    # resume: a second run skips what is fitted, refits a damaged fit file
    damaged = Path(fit_path_for(order[2], str(out2)))
    damaged.write_bytes(damaged.read_bytes()[:100])
    before = {rel: os.stat(fit_path_for(rel, str(out2))).st_mtime_ns for rel in order}
    proc = cli("--img_list", lst, "--img_prefix", prefix, "--save_dir", out2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert summary(proc.stdout) == {"fitted": 1, "skipped": 5, "failed": 0, "total": 6}
    load_fit(damaged)  # readable again
    assert [r[0] for r in read_realign(out2 / "realign_lmk")] == order  # skipped ones too
    for rel in order[:2] + order[3:]:
        assert os.stat(fit_path_for(rel, str(out2))).st_mtime_ns == before[rel]

    # --overwrite refits everything
    rc, out, err = run_main(capsys, "--img_list", lst, "--img_prefix", prefix,
                            "--save_dir", out2, "--overwrite")
    assert rc == 0, err
    assert summary(out) == {"fitted": 6, "skipped": 0, "failed": 0, "total": 6}
    for rel in order[:2]:
        assert os.stat(fit_path_for(rel, str(out2))).st_mtime_ns != before[rel]


def test_shards_partition_the_list(tmp_path, photos, capsys):
    entries = ["plain.png", "gray.png", "rgba.png", "palette.png", "upright.jpg",
               "missing.jpg", "cmyk.jpg"]
    lst = write_list(tmp_path / "list.txt", entries)
    seen = []
    for k in (1, 2, 3):
        rc, out, err = run_main(capsys, "--img_list", lst, "--img_prefix", photos,
                                "--save_dir", tmp_path / "out", "--shard", f"{k}/3")
        assert rc == 0, err
        done = [r[0] for r in read_realign(tmp_path / "out" / f"realign_lmk.shard{k}of3")]
        failed = list(read_failures(tmp_path / "out" / f"failures.txt.shard{k}of3"))
        assert summary(out)["total"] == len(done) + len(failed)
        seen.append(set(done) | set(failed))
    assert set().union(*seen) == set(entries)
    assert sum(len(s) for s in seen) == len(entries)  # disjoint
    assert not (tmp_path / "out" / "realign_lmk").exists()
    # the unit: every N-th item from K-1, all N shards together give the list back
    items = list(range(23))
    for n in (1, 2, 5, 23, 30):
        parts = [batch_fit.shard(items, f"{k}/{n}") for k in range(1, n + 1)]
        assert sorted(x for p in parts for x in p) == items
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


# ---------------------------------------------------------------- exit codes, --vis


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines, "no error message"
    assert lines[-1].startswith(("error:", "3ddfa/inference.py: error:")), lines
    return lines[-1]


@pytest.mark.parametrize("args,needle", [
    ([], "give --img_list"),
    (["--img", "NOPE_missing_folder"], "no such file or folder"),
    (["--img_list", "NOPE_missing.txt"], "image list not found"),
    (["--img", "{photos}/plain.png", "--shard", "0/3"], "--shard"),
    (["--img", "{photos}/plain.png", "--shard", "a/b"], "--shard"),
    (["--img", "{photos}/plain.png", "--shard", "4/3"], "--shard"),
    (["--img", "{empty}"], "no images"),
    (["--img", "{photos}/plain.png", "--workers", "0"], "--workers"),
])
def test_bad_arguments_exit_2(tmp_path, photos, capsys, args, needle):
    (tmp_path / "empty").mkdir()
    args = [a.format(photos=photos, empty=tmp_path / "empty") for a in args]
    rc, out, err = run_main(capsys, *args, "--save_dir", tmp_path / "out")
    assert rc == 2
    assert needle in _one_line_error(err)


def test_cli_exit_codes(tmp_path, photos, example_dir):
    proc = cli("--img", photos / "coffee.png", "--save_dir", tmp_path / "a")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "fitted 0," in proc.stdout
    assert "no face" in (tmp_path / "a" / "failures.txt").read_text()
    proc = cli("--save_dir", tmp_path / "b")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    _one_line_error(proc.stderr)
    proc = cli("--img", example_dir / "astronaut.png", "--save_dir", tmp_path / "c",
               "--shard", "2/1")
    assert proc.returncode == 2 and "--shard" in _one_line_error(proc.stderr)


def test_exit_code_1_when_nothing_fitted_and_0_after_resume(tmp_path, photos, capsys):
    lst = write_list(tmp_path / "list.txt", ["coffee.png", "tiny.png", "missing.jpg"])
    rc, out, err = run_main(capsys, "--img_list", lst, "--img_prefix", photos,
                            "--save_dir", tmp_path / "out")
    assert rc == 1 and summary(out)["failed"] == 3
    lst = write_list(tmp_path / "list.txt", ["plain.png"])
    run_main(capsys, "--img_list", lst, "--img_prefix", photos, "--save_dir", tmp_path / "out")
    rc, out, err = run_main(capsys, "--img_list", lst, "--img_prefix", photos,
                            "--save_dir", tmp_path / "out")
    assert rc == 0 and summary(out)["skipped"] == 1  # all skipped is still a success


def test_vis_writes_a_picture_per_fitted_photo(tmp_path, example_dir, photos, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("astronaut.png", "grace_hopper.jpg"):
        (folder / "sub" / name).write_bytes((example_dir / name).read_bytes())
    (folder / "coffee.png").write_bytes((photos / "coffee.png").read_bytes())
    rc, out, err = run_main(capsys, "--img", folder, "--save_dir", tmp_path / "out", "--vis")
    assert rc == 0, err
    vis = sorted(p.relative_to(tmp_path / "out" / "vis")
                 for p in (tmp_path / "out" / "vis").rglob("*.jpg"))
    assert vis == [Path("sub/astronaut.png.jpg"), Path("sub/grace_hopper.jpg.jpg")]
    for name in ("astronaut.png", "grace_hopper.jpg"):
        photo = read_image(folder / "sub" / name)
        pic = read_image(tmp_path / "out" / "vis" / "sub" / f"{name}.jpg")
        assert pic.shape == photo.shape
        assert np.abs(pic.astype(float) - photo).mean() > 1.0  # something was drawn
