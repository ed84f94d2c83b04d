"""Every command line answers a malformed flag with one line on stderr and exit code 2."""

from __future__ import annotations

import pytest

import evaluate
import test as rotate_cli  # the repository's test.py
import train
from face3d import batch_fit
from util import contact_sheet


@pytest.mark.parametrize("main, argv, needle, prog", [
    (train.main, ["--batchSize", "abc"], "argument --batchSize: invalid int value: 'abc'",
     "train.py"),
    (rotate_cli.main, ["--name", "x", "--no_such_flag"], "unrecognized arguments",
     "test.py"),
    (evaluate.main, ["--name", "x", "--erode_kernel", "1.5"], "invalid int value",
     "evaluate.py"),
    (batch_fit.main, ["--save_dir", "out", "--workers", "two"], "--workers",
     "3ddfa/inference.py"),
    (contact_sheet.main, ["--bogus"], "unrecognized arguments: --bogus",
     "python -m util.contact_sheet"),
])
def test_malformed_flags_give_one_line_and_exit_2(main, argv, needle, prog, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert lines[0].endswith(f"(see {prog} --help)"), lines[0]
