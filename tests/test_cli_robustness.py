"""test.py, evaluate.py and the contact sheet under bad input and faults: names that
collide, paths that escape, fits that lie, folders that cannot be written, runs that would
overwrite runs, and a kill -9 in the middle of a run."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from helpers import page_links  # noqa: E402

import evaluate  # noqa: E402
import test as rotate_cli  # noqa: E402  (the repository's test.py)
from data.registry import DATASETS  # noqa: E402
from face3d.fit import fit_path_for  # noqa: E402
from util import contact_sheet  # noqa: E402

FAST = ["--crop_size", "64", "--device", "cpu", "--yaw_poses", "0", "30"]
PHOTOS = ("astronaut.png", "grace_hopper.jpg")


@pytest.fixture(scope="module")
def fits(tmp_path_factory, example_dir, fitter):
    """Fit files of the two example photos (fitted once for the module)."""
    from face3d.imageio import read_image

    folder = tmp_path_factory.mktemp("fits")
    for name in PHOTOS:
        fitter.fit(read_image(str(example_dir / name))).save(
            folder / (os.path.splitext(name)[0] + ".npz"))
    return folder


def probe_dataset(monkeypatch, root, example_dir, fits, entries, bad_fits=None):
    """Register dataset 'probe': photos and fits under ``root``, list ``entries``;
    ``bad_fits``: {photo name: its fit file's arrays (a dict), or bytes}."""
    img, fit_dir = root / "img", root / "fits"
    img.mkdir(parents=True)
    fit_dir.mkdir()
    for name in PHOTOS:
        shutil.copy(example_dir / name, img / name)
        place_fit(fits / (os.path.splitext(name)[0] + ".npz"), name, fit_dir)
    for name, content in (bad_fits or {}).items():
        path = fit_path_for(name, str(fit_dir))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            if isinstance(content, bytes):
                f.write(content)
            else:
                np.savez(f, **content)
    (root / "list.txt").write_text("".join(e + "\n" for e in entries))
    monkeypatch.setitem(DATASETS._entries, "probe", dict(
        prefix=str(img), file_list=str(root / "list.txt"),
        landmark_list=str(fit_dir / "realign_lmk"), fits_dir=str(fit_dir), folder_level=1))
    return root


def place_fit(source, rel, fit_dir):
    """Copy fit file ``source`` to where the fit of photo ``rel`` belongs under fit_dir."""
    path = fit_path_for(rel, str(fit_dir))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copy(source, path)


def fit_arrays(fits, **changes):
    with np.load(fits / "astronaut.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    return arrays


def run_test(tmp_path, *args, name="r"):
    return rotate_cli.main(FAST + ["--checkpoints_dir", str(tmp_path / "ck"), "--results_dir",
                                   str(tmp_path / "res"), "--name", name, *args])


def read_manifest(tmp_path, name="r"):
    with open(tmp_path / "res" / name / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def exit_code(main, argv):
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# ------------------------------------------------------------------------- 1: names


def test_output_names_are_distinct_and_inside():
    keys = ["a/face.jpg", "b/face.jpg", "c/face.png", "c/face.jpg", "Face.JPG", "face.jpg",
            "manifest.csv.png", "x"]
    stems = rotate_cli.output_stems(keys)
    assert len({s.lower() for s in stems}) == len(keys), stems
    assert stems[:4] == ["a/face", "b/face", "c/face_png", "c/face_jpg"]
    assert stems[6] == "manifest.csv_"  # never the run's own manifest.csv
    for bad, safe in [("/abs/x/face.jpg", "abs/x/face.jpg"), ("../up/f.jpg", "__/up/f.jpg"),
                      ("a/./b//c.jpg", "a/b/c.jpg"), ("new\nline.jpg", "new_line.jpg"),
                      ("", "_"), ("..\\up\\f.jpg", "__/up/f.jpg")]:
        assert rotate_cli.safe_relpath(bad) == safe, bad


def test_three_photos_called_face_give_three_outputs(tmp_path, example_dir):
    paths = []
    for sub, src, ext in (("a", "astronaut.png", "jpg"), ("b", "grace_hopper.jpg", "jpg"),
                          ("c", "astronaut.png", "png")):
        (tmp_path / sub).mkdir()
        image = Image.open(example_dir / src).convert("RGB")
        if sub == "c":
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        paths.append(str(tmp_path / sub / f"face.{ext}"))
        image.save(paths[-1])
    # the same file twice is rotated once
    assert run_test(tmp_path, "--img", *paths, paths[0], "--yaw_poses", "0") == 0
    rows = read_manifest(tmp_path)
    assert sorted(r["input"] for r in rows) == ["a/face.jpg", "b/face.jpg", "c/face.png"]
    outputs = [r["output"] for r in rows]
    assert sorted(outputs) == ["a/face/yaw+0.png", "b/face/yaw+0.png", "c/face/yaw+0.png"]
    images = [np.asarray(Image.open(tmp_path / "res" / "r" / o)) for o in outputs]
    assert all(np.abs(images[i].astype(int) - images[j]).mean() > 5
               for i in range(3) for j in range(i))  # three different faces, none overwritten


# ------------------------------------------------------------------------- 6: escapes


def test_dataset_list_paths_never_leave_the_results_dir(tmp_path, example_dir, fits,
                                                        monkeypatch):
    root = probe_dataset(monkeypatch, tmp_path / "ds", example_dir, fits, [])
    (root / "other").mkdir()
    shutil.copy(example_dir / "grace_hopper.jpg", root / "other" / "gh.jpg")
    place_fit(fits / "grace_hopper.npz", "../other/gh.jpg", root / "fits")
    absolute = str(root / "img" / "astronaut.png")
    place_fit(fits / "astronaut.npz", absolute, root / "fits")
    (root / "list.txt").write_text(f"{absolute}\n../other/gh.jpg\n")
    assert run_test(tmp_path, "--dataset", "probe", "--yaw_poses", "0") == 0
    res = os.path.realpath(tmp_path / "res" / "r")
    written = [os.path.join(a, f) for a, _, fs in os.walk(tmp_path) for f in fs
               if f.startswith("yaw")]
    assert len(written) == 2 and all(os.path.realpath(w).startswith(res + os.sep)
                                     for w in written), written


def test_name_must_stay_inside(tmp_path, capsys):
    for name in ("../escaped", "/abs", "", ".", "./.", ".//"):
        assert exit_code(rotate_cli.main, ["--name", name, "--results_dir",
                                           str(tmp_path)]) == 2
        assert "--name" in one_error_line(capsys)
    assert not (tmp_path.parent / "escaped").exists()


# ------------------------------------------------------------------------- 7: bad fits


def test_bad_fits_fail_per_photo(tmp_path, example_dir, fits, monkeypatch, capsys):
    nan = {k: (np.full_like(v, np.nan) if v.dtype.kind == "f" else v)
           for k, v in fit_arrays(fits).items()}
    cases = {"few_vertices.png": fit_arrays(fits, vertices=np.zeros((400, 3), np.float32)),
             "all_nan.png": nan,
             "junk.png": os.urandom(300),
             "lmk5.png": fit_arrays(fits, landmarks5=np.zeros((3, 2))),
             "text_vertices.png": fit_arrays(fits, vertices=np.full((468, 3), "a"))}
    root = probe_dataset(monkeypatch, tmp_path / "ds", example_dir, fits,
                         # a bad fit first: only an older format stops a whole dataset
                         list(cases) + ["grace_hopper.jpg"], cases)
    for name in cases:
        shutil.copy(example_dir / "astronaut.png", root / "img" / name)
    assert run_test(tmp_path, "--dataset", "probe") == 0
    out = capsys.readouterr().out
    assert "5 failed" in out
    rows = read_manifest(tmp_path)
    assert {r["input"] for r in rows} == {"grace_hopper.jpg"} and len(rows) == 2
    failures = (tmp_path / "res" / "r" / "failures.txt").read_text().splitlines()
    reasons = dict(line.split("\t") for line in failures)
    assert set(reasons) == set(cases), reasons
    assert "vertices" in reasons["few_vertices.png"] and "468" in reasons["few_vertices.png"]
    assert "NaN" in reasons["all_nan.png"]
    assert "landmarks5" in reasons["lmk5.png"]
    assert "junk" in reasons["junk.png"] or "unreadable" in reasons["junk.png"]


def test_every_photo_failing_exits_1_with_a_manifest(tmp_path, example_dir, fits, monkeypatch):
    root = probe_dataset(monkeypatch, tmp_path / "ds", example_dir, fits, ["broken.png"],
                         {"broken.png": fit_arrays(fits)})
    (root / "img" / "broken.png").write_bytes(b"not an image")
    assert run_test(tmp_path, "--dataset", "probe") == 1
    assert read_manifest(tmp_path) == []
    assert (tmp_path / "res" / "r" / "failures.txt").read_text().startswith("broken.png\t")


def test_evaluate_fails_a_bad_fit_and_scores_the_rest(tmp_path, example_dir, fits,
                                                      monkeypatch):
    probe_dataset(monkeypatch, tmp_path / "ds", example_dir, fits, list(PHOTOS),
                  {"astronaut.png": fit_arrays(fits, vertices=np.zeros((400, 3)))})
    out = tmp_path / "ev"
    assert evaluate.main(["--dataset", "probe", "--crop_size", "64", "--device", "cpu",
                          "--yaw_poses", "0", "--pairs", "0", "--no_identity",
                          "--no_reconstruction", "--out", str(out),
                          "--checkpoints_dir", str(tmp_path / "ck")]) == 0
    failures = (out / "failures.txt").read_text()
    assert failures.startswith("astronaut.png\t") and "vertices" in failures
    import json

    assert json.loads((out / "report.json").read_text())["photos"]["evaluated"] == 1


# ------------------------------------------------------------------------- 5: overwrite


def test_a_different_run_is_refused_without_overwrite(tmp_path, example_dir, fits,
                                                      monkeypatch, capsys):
    probe_dataset(monkeypatch, tmp_path / "ds", example_dir, fits, list(PHOTOS))
    assert run_test(tmp_path, "--dataset", "probe") == 0
    res = tmp_path / "res" / "r"
    before = {p: p.read_bytes() for p in res.rglob("*") if p.is_file()}
    # the same command again is a repeat: allowed, same files
    assert run_test(tmp_path, "--dataset", "probe") == 0
    assert "repeating the run" in capsys.readouterr().out
    assert {p for p in res.rglob("*") if p.is_file()} == set(before)
    # other settings: refused, nothing touched
    assert run_test(tmp_path, "--dataset", "probe", "--yaw_poses", "-45") == 2
    line = one_error_line(capsys)
    assert "holds the outputs of another run" in line and "yaw_poses" in line
    assert "--overwrite" in line
    assert {p: p.read_bytes() for p in res.rglob("*") if p.is_file()} == before
    # --overwrite: the old run's outputs are gone, the new run's are there
    (tmp_path / "ds" / "list.txt").write_text("astronaut.png\n")
    assert run_test(tmp_path, "--dataset", "probe", "--yaw_poses", "-45", "--overwrite") == 0
    left = sorted(str(p.relative_to(res)) for p in res.rglob("*.png"))
    assert left == ["astronaut/yaw-45.png"], left
    assert [r["output"] for r in read_manifest(tmp_path)] == ["astronaut/yaw-45.png"]


def test_folder_with_unrecorded_outputs_is_refused(tmp_path, example_dir, capsys):
    res = tmp_path / "res" / "r"
    res.mkdir(parents=True)
    (res / "manifest.csv").write_text("input,yaw,pitch,output,mode\n")
    assert exit_code(rotate_cli.main, ["--name", "r", "--results_dir", str(tmp_path / "res"),
                                       "--img", str(example_dir / "astronaut.png")]) == 2
    assert "another run" in one_error_line(capsys)


def test_a_run_that_stopped_before_any_output_does_not_block_the_next(tmp_path, capsys):
    # evaluate.py records its run, then finds no photos: the corrected command may go on
    args = ["--out", str(tmp_path / "ev"), "--img", str(tmp_path / "none"), "--no_identity",
            "--pairs", "0", "--device", "cpu", "--checkpoints_dir", str(tmp_path / "ck")]
    (tmp_path / "none").mkdir()
    assert evaluate.main(args) == 2
    assert "no input photos" in one_error_line(capsys)
    assert (tmp_path / "ev" / "run.json").exists()
    from face3d.cli import claim_folder

    assert claim_folder(str(tmp_path / "ev"), {"other": 1}, False, "report.json", None,
                        "") == ""


def test_evaluate_refuses_a_different_evaluation(tmp_path, example_dir, fits, monkeypatch,
                                                 capsys):
    probe_dataset(monkeypatch, tmp_path / "ds", example_dir, fits, ["astronaut.png"])
    args = ["--dataset", "probe", "--crop_size", "64", "--device", "cpu", "--pairs", "0",
            "--no_identity", "--no_reconstruction", "--out", str(tmp_path / "ev"),
            "--checkpoints_dir", str(tmp_path / "ck")]
    assert evaluate.main(args + ["--yaw_poses", "0"]) == 0
    capsys.readouterr()
    assert evaluate.main(args + ["--yaw_poses", "30"]) == 2
    assert "another run" in one_error_line(capsys)
    assert evaluate.main(args + ["--yaw_poses", "30", "--overwrite"]) == 0
    import json

    assert json.loads((tmp_path / "ev" / "report.json").read_text())["yaws"] == [30.0]


def test_no_cli_writes_into_pretrained(tmp_path, capsys):
    pretrained = os.path.join(REPO, "pretrained")
    before = sorted(os.listdir(pretrained))
    assert exit_code(rotate_cli.main, ["--results_dir", REPO, "--name", "pretrained",
                                       "--img", str(tmp_path)]) == 2
    assert "pretrained" in one_error_line(capsys)
    assert exit_code(evaluate.main, ["--out", os.path.join(pretrained, "ev")]) == 2
    assert "pretrained" in one_error_line(capsys)
    assert exit_code(contact_sheet.main, ["--out", os.path.join(pretrained, "s.png")]) == 2
    assert "pretrained" in one_error_line(capsys)
    assert sorted(os.listdir(pretrained)) == before


# ------------------------------------------------------------------------- 8: one line


def test_unwritable_output_folders_give_one_line(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    for main, argv in [
        (rotate_cli.main, ["--results_dir", str(blocker), "--img", str(tmp_path)]),
        (rotate_cli.main, ["--results_dir", "/proc/rr_results", "--img", str(tmp_path)]),
        (evaluate.main, ["--out", str(blocker / "sub")]),
        (evaluate.main, ["--out", "/proc/rr_eval"]),
        (contact_sheet.main, ["--out", str(blocker / "s.png")]),
        (contact_sheet.main, ["--out", str(tmp_path)]),
        (contact_sheet.main, ["--out", str(tmp_path / "sheet")]),
    ]:
        assert exit_code(main, argv) == 2, argv
        line = one_error_line(capsys)
        assert "--out" in line or "--results_dir" in line, line


@pytest.mark.parametrize("argv, needle", [
    (["--lr", "-1"], "argument --lr: must be >= 0"),
    (["--label_nc", "3"], "argument --label_nc: invalid choice: 3"),
    (["--beta1", "1.5"], "argument --beta1: must be in [0, 1)"),
    (["--lambda_l1", "-1"], "argument --lambda_l1: must be >= 0"),
    (["--niter", "-3"], "argument --niter: must be >= 0"),
    (["--nThreads", "-1"], "argument --nThreads: must be >= 0"),
    (["--heatmap_size", "0"], "argument --heatmap_size: must be > 0"),
    (["--max_iters", "0"], "argument --max_iters: must be at least 1"),
    (["--lr", "nan"], "argument --lr: not a finite number"),
    (["--name", "../up"], "--name '../up'"),
])
def test_training_options_are_checked_when_parsed(argv, needle, capsys):
    import train

    assert exit_code(train.main, argv + ["--device", "cpu"]) == 2
    assert needle in one_error_line(capsys)


def test_junk_vgg_weights_are_refused_when_parsed(tmp_path):
    from options.base_options import OptionsError
    from options.train_options import TrainOptions

    junk = tmp_path / "vgg.pth"
    junk.write_bytes(b"not a checkpoint")
    for path, needle in [(junk, "not a PyTorch weights file"), (tmp_path / "nope.pth",
                                                                "not found"),
                         (tmp_path, "is a folder")]:
        with pytest.raises(OptionsError, match="--vgg_weights") as info:
            TrainOptions().parse(["--vgg_weights", str(path), "--device", "cpu"])
        assert needle in str(info.value)
    # without the VGG loss the file is not needed
    TrainOptions().parse(["--vgg_weights", str(junk), "--no_vgg_loss", "--device", "cpu"])
    # torchvision's own vgg19-dcbb9e9d.pth predates torch 1.6: the legacy (non-zip) format
    legacy = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, legacy,
               _use_new_zipfile_serialization=False)
    assert TrainOptions().parse(["--vgg_weights", str(legacy), "--device", "cpu"]
                                ).vgg_weights == str(legacy)


@pytest.mark.parametrize("main, argv, needle", [
    (rotate_cli.main, ["--yaw_poses", "abc"], "argument --yaw_poses: invalid float value: 'abc'"),
    (rotate_cli.main, ["--yaw_poses", "nan"], "argument --yaw_poses: not a finite number"),
    (rotate_cli.main, ["--pitch_poses", "100"], "argument --pitch_poses: 100 is outside"),
    (rotate_cli.main, ["--list_start", "-1"], "argument --list_start: must be >= 0"),
    (rotate_cli.main, ["--batchSize", "0"], "argument --batchSize: must be at least 1"),
    (evaluate.main, ["--identity_yaws", "abc"], "argument --identity_yaws: invalid float"),
    (evaluate.main, ["--max_photos", "-1"], "argument --max_photos: must be >= 0"),
])
def test_test_options_name_the_flag(main, argv, needle, capsys):
    assert exit_code(main, argv) == 2
    assert needle in one_error_line(capsys)


# ------------------------------------------------------------------------- 3: kill -9


def test_kill_9_leaves_complete_files_and_the_rerun_matches(tmp_path, example_dir, fits):
    """kill -9 at a random moment of a run (several times): every image on disk opens,
    the manifest lists only complete photos; the same command again removes the temp
    files and gives exactly the outputs of an uninterrupted run."""
    root = tmp_path / "ds"
    (root / "img").mkdir(parents=True)
    (root / "fits").mkdir()
    for name in PHOTOS:
        shutil.copy(example_dir / name, root / "img" / name)
        place_fit(fits / (os.path.splitext(name)[0] + ".npz"), name, root / "fits")
    (root / "list.txt").write_text("".join(n + "\n" for n in PHOTOS))
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from data.registry import DATASETS; "
        "DATASETS.register('probe', dict(prefix=sys.argv[2] + '/img', file_list=sys.argv[2] "
        "+ '/list.txt', landmark_list=sys.argv[2] + '/fits/realign_lmk', fits_dir=sys.argv[2]"
        " + '/fits', folder_level=1)); import test; sys.exit(test.main(sys.argv[3:]))")
    env = dict(os.environ, RR_PRETRAINED="", OMP_NUM_THREADS="1")

    def command(results):
        return [sys.executable, "-c", script, REPO, str(root), "--dataset", "probe",
                "--results_dir", str(results), "--name", "r", "--gif", "--align",
                "--crop_size", "64", "--device", "cpu", "--yaw_poses", "-30", "0", "30"]

    subprocess.run(command(tmp_path / "clean"), env=env, check=True, capture_output=True)
    clean = tmp_path / "clean" / "r"
    expected = {str(p.relative_to(clean)): p.read_bytes() for p in clean.rglob("*")
                if p.is_file() and p.name not in ("run.json", "index.html")}
    rng = np.random.default_rng(0)
    results = tmp_path / "killed"
    for _ in range(2):  # killed twice, at random moments
        proc = subprocess.Popen(command(results), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        out = results / "r"
        deadline = time.time() + 120
        while time.time() < deadline and not list(out.rglob("*.png")):  # writing has begun
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0, 0.5)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for image in list(out.rglob("*.png")) + list(out.rglob("*.gif")):
            Image.open(image).load()  # complete, or absent
        with open(out / "manifest.csv", newline="") as f:
            for row in csv.DictReader(f):
                assert (out / row["output"]).is_file()
    subprocess.run(command(results), env=env, check=True, capture_output=True)
    out = results / "r"
    assert not [p for p in out.rglob(".tmp_*")]
    got = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*")
           if p.is_file() and p.name not in ("run.json", "index.html")}
    assert got.keys() == expected.keys()
    assert all(got[k] == expected[k] for k in expected), [k for k in expected
                                                          if got[k] != expected[k]]


def test_stale_temp_files_are_removed(tmp_path, example_dir, fits, monkeypatch, capsys):
    probe_dataset(monkeypatch, tmp_path / "ds", example_dir, fits, ["astronaut.png"])
    from face3d import fileio

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    folder = tmp_path / "res" / "r" / "astronaut"
    folder.mkdir(parents=True)
    # what atomic_write leaves when its writer is killed (named after the dead writer)
    stale = folder / os.path.basename(fileio.temp_path_for(str(folder / "yaw+0.png")))
    stale = stale.with_name(stale.name.replace(f"~{os.getpid()}~", f"~{dead}~"))
    stale.write_bytes(b"\x89PNG half")
    assert run_test(tmp_path, "--dataset", "probe") == 0
    assert not stale.exists()
    assert "removed 1 temp file" in capsys.readouterr().out


# ------------------------------------------------------------------------- issue 15


def test_results_page_links_the_gif_and_says_how_cells_stack(tmp_path, example_dir, fits,
                                                             monkeypatch):
    probe_dataset(monkeypatch, tmp_path / "ds", example_dir, fits, ["astronaut.png"])
    assert run_test(tmp_path, "--dataset", "probe", "--gif", "--yaw_poses", "0") == 0
    page = tmp_path / "res" / "r" / "index.html"
    links = page_links(page)
    assert "astronaut/sweep.gif" in links
    assert "beside" not in page.read_text()


def test_html_cells_stack_their_images(tmp_path):
    from util.html import HTMLPage

    page = HTMLPage(str(tmp_path), "t")
    page.table(["a"], [[([str(tmp_path / "r.png"), str(tmp_path / "o.png")], "r (top)")]])
    with open(page.save()) as f:
        html = f.read()
    assert html.count("<div>") == 2  # one line each: stacked, as the captions say
    assert page_links(tmp_path / "index.html") == ["r.png", "r.png", "o.png", "o.png"]


def test_first_fit_is_announced_once(capsys):
    from models.inference import FitterWithNotice

    class Lazy:
        _fitter = None

        def fit(self, rgb):
            self._fitter = "built"
            return "fit"

    fitter = FitterWithNotice(Lazy())
    assert fitter.fit(None) == "fit" and fitter.fit(None) == "fit"
    assert capsys.readouterr().out.count("loading the face fitter (first fit takes ~15 s)") == 1


def test_every_help_reads_plainly(capsys):
    """No doubled '(default ...)', no RST double backticks, angles as numbers, and test.py
    names the run as experiments/v100_test.sh does."""
    import re

    import train
    from face3d import batch_fit

    for main in (rotate_cli.main, evaluate.main, train.main, batch_fit.main,
                 contact_sheet.main):
        assert exit_code(main, ["--help"]) == 0
        flat = " ".join(capsys.readouterr().out.split())
        assert "``" not in flat, main.__module__
        assert not re.search(r"default[^()]*\)\s*\(default", flat, re.I), main.__module__
        assert "(default: None)" not in flat and "(default: False)" not in flat
        assert "['" not in flat, main.__module__  # a list default shown as Python strings
        if main is rotate_cli.main:
            with open(os.path.join(REPO, "experiments", "v100_test.sh")) as f:
                script = f.read()
            name = re.search(r"NAME=\$\{NAME:-(\w+)\}", script).group(1)
            assert re.search(rf"--name NAME .*?\(default: {name}\)", flat), name
            assert "(default: -60 -30 0 30 60)" in flat
            assert "dataset list to process (default: 0)" in flat  # a 0 default is shown
