"""Evaluation of rotated faces: one evaluator per metric behind one small interface.

  evaluator.py       the interface (reset / process / evaluate) and what a run shares
  pose.py, identity.py, reconstruction.py, verification.py   the metrics
  registry.py        the evaluators in report order (edit it to add a metric)
  run.py             the photo loop and the report built from what the evaluators return
  report.py          report.txt tables, index.html, report.json
  lfw_pairs.py       LFW-style verification pairs files
  quick.py           the small evaluation the trainer logs every --eval_freq iterations

evaluate.py is the command line; ``evaluation.quick.quick_eval`` is what train.py calls.
"""
