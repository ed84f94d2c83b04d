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
from util.registry import Registry

EVALUATORS = Registry("evaluator", flag="evaluator", hint="add yours to evaluation/registry.py")
EVALUATORS.register("pose", PoseEvaluator)
EVALUATORS.register("identity", IdentityEvaluator)
EVALUATORS.register("reconstruction", ReconstructionEvaluator)
EVALUATORS.register("verification", VerificationEvaluator)
