"""The evaluator registry: edit this file to add a metric.

A metric is one file in this package with an ``Evaluator`` subclass (see
``evaluation/pose.py`` for a small one) and one line below. Its fields appear in
report.json in this order, its section in report.txt and its time in ``timing_s`` when it
is ``timed``.
"""

from __future__ import annotations

from evaluation.identity import IdentityEvaluator
from evaluation.pose import PoseEvaluator
from evaluation.reconstruction import ReconstructionEvaluator
from evaluation.verification import VerificationEvaluator

EVALUATORS = {
    "pose": PoseEvaluator,
    "identity": IdentityEvaluator,
    "reconstruction": ReconstructionEvaluator,
    "verification": VerificationEvaluator,
}


def get_evaluator(name: str):
    if name not in EVALUATORS:
        raise ValueError(f"unknown evaluator {name!r}; choose one of: {', '.join(EVALUATORS)}")
    return EVALUATORS[name]
