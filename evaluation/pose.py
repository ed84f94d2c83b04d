"""Pose accuracy: does the output face look where it was asked to?"""

from __future__ import annotations

from evaluation.evaluator import Evaluator
from evaluation.report import fmt, table
from util import metrics


class PoseEvaluator(Evaluator):
    """Every photo is aligned and rotated to every ``--yaw_poses`` yaw (absolute: the
    photo's own yaw is replaced; its pitch is kept); each output is fitted again with
    MediaPipe.

    pose {mode: {yaw: {requested_yaw, n, found_fraction, mean_abs_error, median_abs_error,
    p90_abs_error, mean_fitted_yaw}}}: per yaw, the fraction of outputs in which a face is
    still found and the mean / median / 90th percentile of |fitted - requested yaw| over
    those; pose_overall {mode: {found_fraction, mean_abs_error, p90_abs_error}} over all
    yaws; pose_source_refit {n, found_fraction, mean_abs_error, p90_abs_error}: the aligned
    photo itself re-fitted, the fitter's own yaw error (the floor of the pose figures).
    """

    name = "pose"
    keys = ("pose", "pose_overall", "pose_source_refit")

    def reset(self):
        self.fitted = {m: {y: [] for y, _ in self.run.pose_list} for m in self.run.modes}
        self.refit: list[float | None] = []
        self.own: list[float] = []

    def process(self, photo, outputs):
        refit = self.run.fitter.try_fit(photo.crop)
        self.refit.append(None if refit is None else refit.yaw)
        self.own.append(photo.fit.yaw)
        for mode, rotations in outputs.items():
            for k, (yaw, _) in enumerate(self.run.pose_list):
                f = rotations.fits[k]
                self.fitted[mode][yaw].append(None if f is None else f.yaw)
                rotations.notes[k].append(" (no face found)" if f is None
                                          else f": fitted yaw {f.yaw:+.0f}")

    def evaluate(self) -> dict:
        pose, overall = {}, {}
        for mode, by_yaw in self.fitted.items():
            pose[mode] = {f"{y:g}": metrics.pose_summary(v, y) for y, v in by_yaw.items()}
            overall[mode] = metrics.yaw_error_summary(
                [f for v in by_yaw.values() for f in v],
                [y for y, v in by_yaw.items() for _ in v])
        source = {"n": len(self.refit), **metrics.yaw_error_summary(self.refit, self.own)}
        return {"pose": pose, "pose_overall": overall, "pose_source_refit": source}

    @staticmethod
    def text(r: dict) -> list[str]:
        modes = r["modes"]
        header = ["yaw"] + [f"{m}:{c}" for m in modes for c in ("mean", "p90", "found")]
        rows = []
        for y in r["yaws"]:
            k = f"{y:g}"
            rows.append([k] + [c for m in modes for c in (
                fmt(r["pose"][m][k]["mean_abs_error"], "{:.1f}"),
                fmt(r["pose"][m][k]["p90_abs_error"], "{:.1f}"),
                fmt(r["pose"][m][k]["found_fraction"]))])
        rows.append(["all"] + [c for m in modes for c in (
            fmt(r["pose_overall"][m]["mean_abs_error"], "{:.1f}"),
            fmt(r["pose_overall"][m]["p90_abs_error"], "{:.1f}"),
            fmt(r["pose_overall"][m]["found_fraction"]))])
        src = r["pose_source_refit"]
        return ["Pose: |fitted yaw - requested yaw| in degrees over outputs where MediaPipe "
                "finds a face (found = fraction of outputs)", table(header, rows),
                f"(the aligned photos themselves, re-fitted: mean "
                f"{fmt(src['mean_abs_error'], '{:.1f}')}, p90 {fmt(src['p90_abs_error'], '{:.1f}')}"
                f", found {fmt(src['found_fraction'])}: the fitter's own error)", ""]
