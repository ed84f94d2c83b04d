"""evaluate.py and the evaluation package end to end: the report's layout and figures in
render-only mode and on a tiny checkpoint (with verification), one-line errors, the
evaluator registry and a metric plugged in as one class."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from helpers import page_links, write_tiny_checkpoint
from PIL import Image

import evaluate
from evaluation import lfw_pairs
from evaluation.registry import EVALUATORS
from util import metrics

# The report's documented layout: what was run (evaluate.py's docstring), then the keys of
# each per-mode / per-yaw entry of the evaluators' fields.
HEADER_KEYS = ("version", "command", "created", "name", "checkpoint", "checkpoint_iteration",
               "modes", "device", "seed", "dataset", "img", "crop_size", "erode_kernel",
               "background", "generator_symmetric_fill", "yaws", "identity_yaws", "photos",
               "identity")
POSE_KEYS = {"requested_yaw", "n", "found_fraction", "mean_abs_error", "median_abs_error",
             "p90_abs_error", "mean_fitted_yaw"}
IDENTITY_KEYS = {"n", "mean", "median", "p90", "same_person_fraction", "missing"}
RECON_KEYS = {"l1", "psnr", "ssim"}
CONDITION_KEYS = {"pairs", "same", "different", "accuracy_at_threshold", "threshold",
                  "accuracy_cv", "accuracy_cv_std", "cv_threshold", "cv_folds", "auc",
                  "mean_distance_same", "mean_distance_different"}


# --------------------------------------------------------------------------- end to end



def check_report(out, modes, yaws, identity: bool, verification: bool):
    report = json.loads((out / "report.json").read_text())
    # the run's header (documented in evaluate.py), each evaluator's fields (documented in
    # its docstring), timing_s
    metric_keys = [k for cls in EVALUATORS.values() for k in cls.keys]
    assert list(report) == list(HEADER_KEYS) + metric_keys + ["timing_s"]
    for key in HEADER_KEYS + ("timing_s",):
        assert key in evaluate.__doc__, key
    for cls in EVALUATORS.values():
        for key in cls.keys:
            assert key in cls.__doc__, (cls.name, key)
    assert report["modes"] == modes
    assert report["yaws"] == yaws
    for mode in modes:
        assert set(report["pose"][mode]) == {f"{y:g}" for y in yaws}
        for entry in report["pose"][mode].values():
            assert set(entry) == POSE_KEYS
            assert entry["n"] == report["photos"]["evaluated"]
        assert set(report["pose_overall"][mode]) == {"found_fraction", "mean_abs_error",
                                                     "p90_abs_error"}
        rec = report["reconstruction"][mode]
        assert set(rec) == {"mask", "full", "identity_distance"}
        assert set(rec["mask"]) == RECON_KEYS and set(rec["full"]) == RECON_KEYS
        if identity:
            assert set(report["identity_distance"][mode]) == {f"{y:g}" for y in yaws}
            for entry in report["identity_distance"][mode].values():
                assert set(entry) == IDENTITY_KEYS
    assert set(report["pose_source_refit"]) == {"n", "found_fraction", "mean_abs_error",
                                                "p90_abs_error"}
    assert report["reconstruction"]["n"] == report["photos"]["evaluated"]
    assert {"path", "yaw_a", "yaw_b", "pitch_a", "pitch_b"} == set(
        report["reconstruction"]["photos"][0])
    assert report["identity"]["available"] == identity
    if identity:
        assert report["identity"]["threshold"] == 0.6
    else:
        assert report["identity_distance"] is None
    if verification:
        v = report["verification"]
        assert {"pairs_file", "seed", "requested_per_class", "pairs_used", "pairs_dropped",
                "threshold_protocol", "as_is", "frontalised"} == set(v)
        assert set(v["as_is"]) == CONDITION_KEYS
        assert set(v["frontalised"]) == set(modes)
        for cond in v["frontalised"].values():
            assert set(cond) == CONDITION_KEYS
    else:
        assert report["verification"] is None
    assert set(report["timing_s"]) == {"total", "pose_identity", "reconstruction",
                                       "verification"}
    text = (out / "report.txt").read_text()
    assert "Pose" in text and "Reconstruction" in text
    links = page_links(out / "index.html")
    assert links, "the page shows no images"
    for src in links:
        assert (out / src).is_file(), src
    shown = {os.path.basename(s) for s in links}
    assert "source.png" in shown and "recon_real.png" in shown
    for mode in modes:
        assert any(s.startswith(f"{mode}_yaw") for s in shown)
    return report


@pytest.fixture(scope="module")
def have_dlib():
    from util.identity import load_describer

    return load_describer()[0] is not None


def test_render_only_on_examples(tmp_path, capsys, have_dlib):
    out = tmp_path / "eval"
    argv = ["--dataset", "example", "--out", str(out), "--device", "cpu", "--yaw_poses", "-30",
            "0", "30", "--checkpoints_dir", str(tmp_path / "none"), "--crop_size", "192"]
    rc = evaluate.main(argv)
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Pose: |fitted yaw - requested yaw|" in printed
    report = check_report(out, ["render", "symmetry"], [-30.0, 0.0, 30.0], have_dlib, False)
    assert report["checkpoint"] is None and report["photos"]["evaluated"] == 2
    # renders of real faces at moderate yaws are found and turned the right way
    for mode in ("render", "symmetry"):
        for y in ("-30", "0", "30"):
            entry = report["pose"][mode][y]
            assert entry["found_fraction"] == 1.0
            assert entry["mean_abs_error"] < 15.0
        rec = report["reconstruction"][mode]
        # what the a->b->a renders score, recomputed here from the poses the report lists
        expected = reconstruction_scores(report, argv, mode == "symmetry")
        for k in ("l1", "psnr", "ssim"):
            assert rec["mask"][k] == pytest.approx(expected["mask"][k], rel=1e-6), k
            assert rec["full"][k] == pytest.approx(expected["full"][k], rel=1e-6), k
        # and they are what the renderer gives today (about 28 dB in the mask with
        # render.whole_image.FACE_DEPTH 0.7, 24.4 with 0.8, measured): a change of the
        # renderer or the mask that moves them shows here
        assert 26.0 < rec["mask"]["psnr"] < 30.0 and 0.6 < rec["mask"]["ssim"] < 0.95
        assert rec["full"]["psnr"] < rec["mask"]["psnr"]  # the background is not the photo
        if have_dlib:
            assert report["identity_distance"][mode]["0"]["mean"] < 0.6
    assert (report["reconstruction"]["symmetry"]["mask"]["psnr"]
            != report["reconstruction"]["render"]["mask"]["psnr"])  # the fill is applied


def reconstruction_scores(report, argv, symmetric_fill: bool) -> dict:
    """Mean L1 / PSNR / SSIM, in the eroded face mask and over the crop, of the a->b->a
    renders of the report's photos at the poses it lists, made here (with the render
    settings of evaluate.py's ``argv``)."""
    from data.photos import LazyFitter, find_photos, load_photo
    from face3d.align import align
    from models.inference import face_tensors
    from render.renderer import FaceMesh, training_pair
    from render.settings import RenderSettings
    from util.visualizer import to_uint8

    photos = {p.rel: p for p in find_photos(dataset=report["dataset"])}
    settings = RenderSettings.from_options(evaluate.EvalOptions().parse(argv)).replace(
        symmetric_fill=symmetric_fill)
    scores = {"mask": [], "full": []}
    for entry in report["reconstruction"]["photos"]:
        rgb, fit = load_photo(photos[entry["path"]], LazyFitter())
        crop, fit_c, _ = align(rgb, fit, report["crop_size"])
        assert fit_c.yaw == pytest.approx(entry["yaw_a"])
        face = face_tensors(crop, fit_c, "cpu")
        pair = training_pair(face["image"], face["vertices"], face["rotation"], face["scale"],
                             face["translation"], torch.tensor([entry["yaw_b"]]),
                             torch.tensor([entry["pitch_b"]]), FaceMesh.mediapipe(), settings)
        out = np.ascontiguousarray(to_uint8(pair["input"])[0])
        mask = pair["mask"][0, 0].numpy() > 0.5
        scores["mask"].append([metrics.l1(out, crop, mask), metrics.psnr(out, crop, mask),
                               metrics.ssim(out, crop, mask)])
        scores["full"].append([metrics.l1(out, crop), metrics.psnr(out, crop),
                               metrics.ssim(out, crop)])
    return {where: dict(zip(("l1", "psnr", "ssim"), np.mean(v, 0))) for where, v in scores.items()}


def test_identity_skipped_with_a_message(tmp_path, capsys, monkeypatch):
    import util.identity

    def missing():
        raise util.identity.IdentityUnavailable("dlib is not installed; pip install ...")

    monkeypatch.setattr(util.identity, "FaceDescriber", missing)
    out = tmp_path / "eval"
    rc = evaluate.main(["--dataset", "example", "--out", str(out), "--device", "cpu",
                        "--yaw_poses", "0", "--mode", "render", "--crop_size", "128",
                        "--max_photos", "1", "--html_rows", "1"])
    assert rc == 0
    assert "identity metrics skipped: dlib is not installed" in capsys.readouterr().out
    check_report(out, ["render"], [0.0], False, False)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny generator checkpoint trained with the symmetry fill, at iteration 7."""
    root = tmp_path_factory.mktemp("ckpt")
    write_tiny_checkpoint(root, extra=["--symmetric_fill"], iteration=7)
    return root


@pytest.fixture(scope="module")
def people_root(tmp_path_factory, example_photos):
    """An LFW-style folder: two 'people', two photos each (a photo and its mirror image)."""
    root = tmp_path_factory.mktemp("people")
    for person, name in (("Eileen_Collins", "astronaut.png"),
                         ("Grace_Hopper", "grace_hopper.jpg")):
        (root / person).mkdir()
        rgb = example_photos[name]
        Image.fromarray(rgb).save(root / person / f"{person}_0001.jpg", quality=95)
        Image.fromarray(np.ascontiguousarray(rgb[:, ::-1])).save(
            root / person / f"{person}_0002.jpg", quality=95)
    return root


def test_checkpoint_all_modes_with_verification(tiny_checkpoint, people_root, example_dir,
                                                tmp_path, capsys, have_dlib):
    out = tmp_path / "eval"
    pairs_file = tmp_path / "pairs.txt"
    args = ["--name", "tiny", "--checkpoints_dir", str(tiny_checkpoint), "--img",
            str(example_dir), "--out", str(out), "--device", "cpu", "--yaw_poses", "-30",
            "30", "--mode", "generator", "render", "--pairs", "2",
            "--pairs_file", str(pairs_file), "--pairs_root", str(people_root)]
    assert evaluate.main(args) == 0
    captured = capsys.readouterr()
    assert "generator from" in captured.out
    modes = ["generator", "render"]
    report = check_report(out, modes, [-30.0, 30.0], have_dlib, have_dlib)
    assert report["checkpoint"].endswith("latest.pt") and report["checkpoint_iteration"] == 7
    assert report["crop_size"] == 64  # the checkpoint's
    assert report["generator_symmetric_fill"] is True  # what it was trained with
    ex = out / "examples" / "000_astronaut"
    assert (ex / "generator_yaw-30_render.png").is_file()
    assert np.asarray(Image.open(ex / "generator_yaw-30.png")).shape == (64, 64, 3)
    if have_dlib:
        pairs = lfw_pairs.read_pairs(str(pairs_file))
        assert len(pairs) == 4 and sum(p[2] for p in pairs) == 2
        v = report["verification"]
        assert v["pairs_used"] + v["pairs_dropped"] == 4
        # a photo and its mirror image are the same person; the two women are not
        assert v["as_is"]["accuracy_at_threshold"] == 1.0 and v["as_is"]["auc"] == 1.0


def test_generator_mode_needs_a_checkpoint(tmp_path, capsys):
    rc = evaluate.main(["--mode", "generator", "--checkpoints_dir", str(tmp_path),
                        "--name", "nothing", "--device", "cpu"])
    assert rc == 2
    assert "needs a checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("source", ["img", "dataset"])
def test_no_photos_is_one_line_error(source, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    given = (["--img", str(tmp_path / "empty")] if source == "img"
             else ["--dataset", "example", "--list_start", "50", "--list_end", "60"])
    rc = evaluate.main(given + ["--mode", "render", "--out", str(tmp_path / "out"),
                                "--device", "cpu", "--no_identity"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no input photos" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- evaluators


def test_evaluator_registry():
    assert list(EVALUATORS) == ["pose", "identity", "reconstruction", "verification"]
    assert all(EVALUATORS.get(name).name == name for name in EVALUATORS)
    with pytest.raises(ValueError, match="unknown evaluator 'nope'; choose one of: pose, "
                                         "identity, reconstruction, verification"):
        EVALUATORS.get("nope")
    with pytest.raises(ValueError, match="registered twice"):
        EVALUATORS.register("pose", object)


def test_a_new_metric_is_one_class(example_dir, tmp_path):
    """What evaluation/registry.py promises: an Evaluator subclass alone puts its fields in
    the report (after the others'), its section in report.txt and its notes in the captions
    of index.html."""
    import time

    from data.photos import find_photos
    from evaluation.evaluator import EvalRun, Evaluator
    from evaluation.pose import PoseEvaluator
    from evaluation.report import format_report
    from evaluation.run import build_report, score, start

    class Brightness(Evaluator):
        """brightness {mode: mean 8-bit level of the outputs}"""

        name, keys = "brightness", ("brightness",)

        def reset(self):
            self.levels = {}

        def process(self, photo, outputs):
            for mode, rotations in outputs.items():
                self.levels.setdefault(mode, []).append(float(np.mean(rotations.images)))
                rotations.notes[0].append(", bright")

        def evaluate(self):
            return {"brightness": {m: float(np.mean(v)) for m, v in self.levels.items()}}

        @staticmethod
        def text(r):
            return [f"brightness {r['brightness']['render']:.1f}"]

    t0 = time.perf_counter()
    opt = evaluate.EvalOptions().parse(["--mode", "render", "--yaw_poses", "0", "--crop_size",
                                        "128", "--no_reconstruction", "--no_identity"])
    run = EvalRun(opt, torch.device("cpu"), None, ["render"], False, None, str(tmp_path))
    photos = find_photos(img=[example_dir / "astronaut.png"])
    evaluators = {PoseEvaluator: PoseEvaluator(run), Brightness: Brightness(run)}
    results, timing = score(run, photos, evaluators, start(evaluators), t0)
    report = build_report(run, [], photos, None, None, "identity off", results, timing, t0)
    assert list(report)[-4:] == ["pose_overall", "pose_source_refit", "brightness", "timing_s"]
    (shown,) = run.gallery.examples
    _, out_path, caption = shown.rows["render"][0]
    assert caption.startswith("yaw+0: fitted yaw") and caption.endswith(", bright")
    assert report["brightness"]["render"] == pytest.approx(np.asarray(Image.open(out_path)).mean())
    assert f"brightness {report['brightness']['render']:.1f}" in format_report(report, evaluators)
