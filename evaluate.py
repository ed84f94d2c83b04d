"""Evaluate Rotate-and-Render: pose accuracy, identity preservation, LFW-style verification
and self-supervised reconstruction, for a checkpoint or for the render-only baselines.

    python evaluate.py --dataset lfw --max_photos 200 --mode render symmetry    # baselines
    python evaluate.py --name NAME --dataset lfw --max_photos 200               # a checkpoint
    python evaluate.py --name NAME --img my_photos/ --yaw_poses -45 0 45 --pairs 0

Modes (``--mode``, several allowed; default ``generator`` when <checkpoints_dir>/<name>/
<which_epoch>.pt exists, else ``render symmetry``):
  render     the raw rotated render (hidden texels keep the smeared texture: "artifacts")
  symmetry   the rotated render with the symmetry-aware fill of hidden texels
  generator  the generator's repair of the render (its input is made with the fill,
             erosion and background the checkpoint was trained with)

Metrics: one evaluator each in the ``evaluation`` package (``evaluation/registry.py``
lists them); each one's docstring says what it measures and the report.json fields it
fills: pose (``evaluation/pose.py``), identity (needs ``pip install -r
requirements-eval.txt``), reconstruction, verification (LFW-style pairs; runs with
``--dataset lfw``, ``--pairs_file`` or ``--pairs_root``; ``--pairs 0`` turns it off).

Outputs in ``--out`` (default results/<name>/eval):
  report.json   every figure (fields below); report.txt the same as tables (also printed);
  index.html    example rows: source, then each mode's output (and render) per yaw, and the
                reconstruction of each example; images under examples/;
  failures.txt  photos that could not be used, with the reason;
  lfw_pairs_seed<S>_n<N>.txt  the verification pairs (LFW pairs.txt layout) unless
                --pairs_file names another path;
  run.json      the settings of the run that wrote the folder. A folder that holds an
                evaluation with other settings is refused unless --overwrite (which deletes
                its report and examples first); the same command again redoes it. Every
                file is written whole (atomically); --out is never inside pretrained/.

report.json fields: what was run -- version, command, created, name, checkpoint,
checkpoint_iteration, modes, device, seed, dataset, img, crop_size, erode_kernel,
background, generator_symmetric_fill, yaws, identity_yaws, photos {requested, evaluated,
failed}, identity {available, message, model, threshold} -- then each evaluator's fields
in registry order (null when it is off), then timing_s {total, pose_identity, and one per
timed evaluator: reconstruction, verification}. Yaw keys are written like "-60", "0",
"15"; a value that could not be measured is null.

Training logs a small version every few iterations: ``evaluation.quick.quick_eval``.
"""

from __future__ import annotations

import os
import sys
import time

from data.photos import photos_of, sample
from evaluation.evaluator import MODE_LABEL, MODES, EvalRun
from evaluation.lfw_pairs import LFW_ROOT
from evaluation.report import format_report, write_html, write_report
from evaluation.run import build_evaluators, build_report, score, start
from face3d.cli import (
    FolderInUseError,
    OutputFolderError,
    angle,
    claim_folder,
    non_negative_int,
    output_folder,
)
from face3d.fileio import remove_stale_temps
from models.inference import FitterWithNotice, load_generator, pose_name
from options.base_options import OptionsError, resolve_device
from options.test_options import TestOptions
from util.checkpoint import CheckpointError, checkpoint_path, inside_pretrained, pretrained_path

# Options that change how fast an evaluation goes or where it is written, not its figures.
NOT_SETTINGS = ("device", "nThreads", "batchSize", "overwrite", "results_dir", "out",
                "is_train", "checkpoints_dir", "html_rows")
# What an evaluation writes at the top of --out (run.json is claim_folder's).
REPORT_FILES = ("report.json", "report.txt", "index.html", "failures.txt")


class EvalOptions(TestOptions):
    """Evaluate rotated faces: pose accuracy, identity, verification, reconstruction."""

    prog = "evaluate.py"

    def initialize(self, parser):
        p = super().initialize(parser)
        p.set_defaults(yaw_poses=[float(y) for y in range(-60, 61, 15)])
        p.add_argument("--mode", nargs="+", choices=MODES, default=None,
                       help="what to score: render (raw rotated render), symmetry (render "
                            "with the symmetry-aware fill), generator (the checkpoint's "
                            "output); several allowed. Default: generator when the checkpoint "
                            "exists, else render symmetry")
        p.add_argument("--max_photos", type=non_negative_int, default=100,
                       help="score at most this many photos, drawn with --seed from the "
                            "dataset list or --img folders (0: all)")
        p.add_argument("--out", default=None,
                       help="output folder (default: <results_dir>/<name>/eval)")
        p.add_argument("--identity_yaws", nargs="+", type=angle, default=None,
                       help="yaws at which identity distances are computed (each costs a "
                            "dlib descriptor per photo and mode; default: every --yaw_poses)")
        p.add_argument("--no_identity", action="store_true",
                       help="skip every identity metric (no dlib needed)")
        p.add_argument("--no_reconstruction", action="store_true",
                       help="skip the self-supervised reconstruction metrics")
        p.add_argument("--pairs", type=non_negative_int, default=300,
                       help="verification pairs per class (same / different person) to draw "
                            "when no pairs file exists; 0 turns verification off")
        p.add_argument("--pairs_file", default=None,
                       help="verification pairs in LFW pairs.txt layout: read when it exists "
                            "(so a run is exactly repeatable), else drawn and written there "
                            "(default: <out>/lfw_pairs_seed<seed>_n<pairs>.txt)")
        p.add_argument("--pairs_root", default=str(LFW_ROOT),
                       help="folder of <Person>/<Person>_NNNN.jpg photos the pairs refer to")
        p.add_argument("--html_rows", type=non_negative_int, default=6,
                       help="photos shown on index.html (their images go to <out>/examples)")
        return p

    def validate(self, opt):
        super().validate(opt)
        opt.identity_yaws = (list(opt.yaw_poses) if opt.identity_yaws is None
                             else [float(y) for y in opt.identity_yaws])
        if opt.pitch_poses:
            raise OptionsError("evaluate.py scores yaw only: drop --pitch_poses")
        extra = [y for y in opt.identity_yaws if y not in opt.yaw_poses]
        if extra:
            raise OptionsError(f"--identity_yaws {extra} are not among --yaw_poses")


def load_model(opt, options, device):
    """(modes, model or None, generator fill, checkpoint iteration): the scored modes and,
    when the generator is one of them, the checkpoint's generator."""
    ckpt = checkpoint_path(opt)
    # the run's checkpoint, else the shipped generator (pretrained/)
    have_g = os.path.exists(ckpt) or pretrained_path() is not None
    modes = opt.mode or (["generator"] if have_g and not opt.render_only
                         else ["render", "symmetry"])
    modes = list(dict.fromkeys(modes))
    if "generator" not in modes:
        return modes, None, False, None
    if opt.render_only or not have_g:
        raise CheckpointError(f"--mode generator needs a checkpoint: none at {ckpt} "
                              "and no shipped model (check --name, --checkpoints_dir, "
                              "--which_epoch; or score the baselines with --mode render "
                              "symmetry)")
    model, message = load_generator(opt, options.parser, device)
    print(message)
    # load_generator gave opt the checkpoint's render settings (erode_kernel, background,
    # symmetric_fill): the generator's input looks like its training input.
    return modes, model, bool(opt.symmetric_fill), model.checkpoint_iteration


def run_settings(opt, modes, model) -> dict:
    """What defines an evaluation's figures: its options (less NOT_SETTINGS), the modes
    and the generator file and iteration."""
    values = {k: v for k, v in sorted(vars(opt).items()) if k not in NOT_SETTINGS
              and isinstance(v, (int, float, str, bool, list, type(None)))}
    values["modes"] = list(modes)
    values["generator"] = None if model is None else os.path.abspath(model.generator_file)
    values["generator_iteration"] = None if model is None else model.checkpoint_iteration
    return values


def remove_previous(out_dir: str) -> None:
    """Delete an earlier evaluation's report files and its examples/ images (what
    evaluation.report writes); the pairs file stays (it is an input when it exists)."""
    for name in REPORT_FILES:
        path = os.path.join(out_dir, name)
        if os.path.isfile(path):
            os.remove(path)
    examples = os.path.join(out_dir, "examples")
    if os.path.isdir(examples):
        for top, _, files in os.walk(examples, topdown=False):
            for name in files:
                if name.endswith(".png"):
                    os.remove(os.path.join(top, name))
            if not os.listdir(top):
                os.rmdir(top)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    options = EvalOptions()
    t0 = time.perf_counter()
    try:
        opt = options.parse(argv)
        device = resolve_device(opt.device)
        out_dir = opt.out or os.path.join(opt.results_dir, opt.name, "eval")
        if inside_pretrained(out_dir):
            raise OptionsError(f"--out {out_dir} is inside pretrained/, the shipped model's "
                               "folder; write the evaluation elsewhere")
        modes, model, gen_fill, iteration = load_model(opt, options, device)
        output_folder(out_dir, "--out" if opt.out else "--results_dir")
        note = claim_folder(out_dir, run_settings(opt, modes, model), opt.overwrite,
                            "report.json", remove_previous,
                            "choose another --out (or --name)")
    except (OptionsError, CheckpointError, OutputFolderError, FolderInUseError, ValueError,
            OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if note:
        print(note)
    stale = remove_stale_temps(out_dir)  # of killed writers only
    if stale:
        print(f"removed {stale} temp file(s) an interrupted run left in {out_dir}")
    describer, id_message = None, "identity metrics off (--no_identity)"
    if not opt.no_identity:
        from util.identity import load_describer

        describer, id_message = load_describer()
    print(id_message)
    run = EvalRun(opt, device, model, modes, gen_fill, describer, out_dir)
    run.fitter = FitterWithNotice(run.fitter)  # one line before MediaPipe's ~15 s start
    try:
        # a --seed sample of the --img folders or of the dataset's (sorted) list; photos
        # without a fit file are fitted when read, so no dataset-wide fitting pass is needed
        photos = sample(photos_of(opt), opt.max_photos, opt.seed)
        evaluators = build_evaluators(run)
        clock = start(evaluators)
    except (OSError, ValueError, RuntimeError) as e:  # no photos, a bad pairs file or root
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"scoring {len(photos)} photos x {len(opt.yaw_poses)} yaws in modes "
          f"{', '.join(modes)} -> {out_dir}")
    results, timing = score(run, photos, evaluators, clock, t0)
    used = getattr(model, "generator_file", None) or checkpoint_path(opt)
    report = build_report(run, argv, photos, used, iteration, id_message,
                          results, timing, t0)
    text = format_report(report, evaluators)
    try:
        write_report(out_dir, report, text, run.failures)
        write_html(out_dir, report, text, run.gallery,
                   [pose_name(y, p) for y, p in run.pose_list], MODE_LABEL, run.failures)
    except OSError as e:  # the disk filled up, the folder went away ...
        print(text)
        print(f"error: writing the report in {out_dir}: {e}", file=sys.stderr)
        return 1
    print(text)
    print(f"open {os.path.join(out_dir, 'index.html')}")
    return 0 if report["photos"]["evaluated"] else 1


if __name__ == "__main__":
    sys.exit(main())
