"""argparse with one-line errors and a plain --help, for every command line of the project.

argparse's own error prints the whole usage first: for train.py that is two dozen lines of
flags above the one line that matters. Here a bad flag or value gives
``error: argument --batchSize: invalid int value: 'abc' (see train.py --help)`` and exit
code 2, like the project's other input errors.

``HelpFormatter`` shows each flag's default once: not when the help text already says what
the default is, not for None or an off switch, and lists as ``-60 -30 0`` rather than
``['-60', '-30', '0']``. Docstrings written for the code (``like this``) read as plain text.

The value types (``positive_int``, ``angle`` ...) reject bad values when the flag is parsed,
so the error names the flag; ``output_folder`` checks that an output folder can be written
before a run starts, in one line.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tempfile

_RST_LITERAL = re.compile(r"``([^`]*)``")


def plain(text: str | None) -> str | None:
    """``text`` without reStructuredText's double backticks."""
    return None if text is None else _RST_LITERAL.sub(r"\1", text)


def _default_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_default_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown once and readably (see the module docstring)."""

    def _get_help_string(self, action):
        # as argparse's, the text is a %-format string (%(default)s, %%); only the appended
        # default needs escaping
        text = plain(action.help or "")
        default = action.default
        if ("default" in text.lower() or default is None or default is False
                or default == argparse.SUPPRESS
                or not action.option_strings or isinstance(action, argparse._HelpAction)):
            return text
        return text + f" (default: {_default_text(default)})".replace("%", "%%")


class RawHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """HelpFormatter that keeps the description's line breaks."""


class ArgumentParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        if kwargs.get("formatter_class") in (None, argparse.ArgumentDefaultsHelpFormatter,
                                             argparse.HelpFormatter):
            kwargs["formatter_class"] = HelpFormatter
        elif kwargs["formatter_class"] is argparse.RawDescriptionHelpFormatter:
            kwargs["formatter_class"] = RawHelpFormatter
        if "description" in kwargs:
            kwargs["description"] = plain(kwargs["description"])
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------- value types
# argparse turns their ArgumentTypeError into "argument --flag: <message>".


def _number(text: str, kind=float):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(  # argparse's own wording for type=int/float
            f"invalid {kind.__name__} value: {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def finite_float(text: str) -> float:
    return _number(text)


def positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value:g}")
    return value


def unit_interval(text: str) -> float:
    """A number in [0, 1) (Adam's betas)."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value:g}")
    return value


def angle(text: str) -> float:
    """Degrees in [-90, 90]."""
    value = _number(text)
    if not -90.0 <= value <= 90.0:
        raise argparse.ArgumentTypeError(f"{value:g} is outside [-90, 90] degrees")
    return value


# --------------------------------------------------------------------------- output folders


class OutputFolderError(ValueError):
    """An output folder that cannot be created or written; the message names the flag."""


def output_folder(path: str, flag: str) -> str:
    """Create ``path`` (and its parents) and check that files can be written in it; a
    one-line ``OutputFolderError`` naming ``flag`` when not (a file in the way, no
    permission, a read-only file system)."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # unnamed: a kill leaves nothing behind
            pass
    except FileExistsError:
        raise OutputFolderError(f"{flag} {path}: not a folder (a file of that name is in the "
                                "way)") from None
    except NotADirectoryError:
        raise OutputFolderError(f"{flag} {path}: a part of this path is a file, not a "
                                "folder") from None
    except OSError as e:
        raise OutputFolderError(f"{flag} {path}: cannot write there "
                                f"({e.strerror or type(e).__name__})") from None
    return path


# --------------------------------------------------------------------------- run records
# A results folder remembers the run that wrote it (RUN_RECORD: its settings), so that a
# later run with other settings does not silently mix its outputs with the earlier ones.

RUN_RECORD = "run.json"


class FolderInUseError(ValueError):
    """A results folder that holds the outputs of another run."""


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)]


def claim_folder(folder: str, settings: dict, overwrite: bool, marker: str,
                 remove_previous, hint: str) -> str:
    """Make ``folder`` this run's: returns a line for the console ('' for a new folder).

    ``settings``: what defines the run's outputs (JSON-serialisable). The folder is free
    when it holds no earlier outputs (no ``marker`` file: a run that stopped before writing
    any leaves only its record), or when its record has the same settings (a repeat, e.g.
    after a crash: it is redone in place).
    Otherwise a ``FolderInUseError`` names what differs, unless ``overwrite``: then
    ``remove_previous(folder)`` deletes the earlier run's outputs first. The new record is
    written (atomically) before any output."""
    import json

    from face3d.fileio import atomic_write

    record_path = os.path.join(folder, RUN_RECORD)
    settings = json.loads(json.dumps(settings))  # as it reads back (tuples -> lists ...)
    old = None  # no earlier outputs (a record without them: a run that stopped early)
    if not os.path.exists(os.path.join(folder, marker)):
        old = None
    elif os.path.exists(record_path):
        try:
            with open(record_path, encoding="utf-8") as f:
                old = dict(json.load(f)["settings"])
        except (OSError, ValueError, KeyError, TypeError):
            old = {}  # unreadable: someone else's
    else:
        old = {}  # outputs written before runs were recorded
    if old is None:
        line = ""
    elif old == settings:
        line = f"repeating the run in {folder} (same settings): its outputs are replaced"
    else:
        differs = (_differences(old, settings) if old
                   else ["unknown (no readable record of that run)"])
        what = ", ".join(differs[:6]) + (f" (+{len(differs) - 6} more)" if len(differs) > 6
                                         else "")
        if not overwrite:
            raise FolderInUseError(f"{folder} holds the outputs of another run (it differs in: "
                                   f"{what}); pass --overwrite to replace them, or {hint}")
        remove_previous(folder)
        line = (f"--overwrite: removed the earlier run's outputs in {folder} (it differed "
                f"in: {what})")
    with atomic_write(record_path) as f:
        json.dump({"format": 1, "settings": settings}, f, indent=1, sort_keys=True)
        f.write("\n")
    return line
