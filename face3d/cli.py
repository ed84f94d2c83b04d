"""argparse with one-line errors, for every command line of the project.

argparse's own error prints the whole usage first: for train.py that is two dozen lines of
flags above the one line that matters. Here a bad flag or value gives
``error: argument --batchSize: invalid int value: 'abc' (see train.py --help)`` and exit
code 2, like the project's other input errors.
"""

from __future__ import annotations

import argparse


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
