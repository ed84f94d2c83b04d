"""LFW-style verification pairs: draw them from a folder of ``Person/Person_NNNN.jpg``
photos, and read and write them in the layout of LFW's own ``pairs.txt`` (``name n1 n2``
for a same-person pair, ``name1 n1 name2 n2`` for a different-person pair)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from face3d.fileio import atomic_write

# LFW as laid out next to the repository (../shared/data/lfw); the default --pairs_root.
LFW_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"


def list_people(root: str) -> dict[str, list[str]]:
    """person -> sorted photo relpaths (``Person/Person_NNNN.jpg``) under an LFW-style root."""
    from face3d.imageio import IMAGE_EXTENSIONS

    people = {}
    for person in sorted(os.listdir(root)):
        folder = os.path.join(root, person)
        if not os.path.isdir(folder) or person.startswith("."):
            continue
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if files:
            people[person] = [f"{person}/{f}" for f in files]
    return people


def make_pairs(people: dict[str, list[str]], n: int, seed: int):
    """``n`` distinct same-person pairs (a person with >= 2 photos, two of them) and ``n``
    distinct different-person pairs (two people, one photo each), drawn with ``seed``:
    [(relpath_a, relpath_b, is_same)]."""
    rng = np.random.default_rng(seed)
    names = sorted(people)
    multi = [p for p in names if len(people[p]) >= 2]
    if not multi or len(names) < 2:
        raise ValueError("the pairs root needs people with two or more photos and at least "
                         "two people")
    max_same = sum(len(people[p]) * (len(people[p]) - 1) // 2 for p in multi)
    same, diff = [], []
    seen = set()
    while len(same) < min(n, max_same):
        p = multi[rng.integers(len(multi))]
        i, j = sorted(rng.choice(len(people[p]), 2, replace=False))
        key = (people[p][i], people[p][j])
        if key not in seen:
            seen.add(key)
            same.append((*key, True))
    tries = 0
    while len(diff) < n and tries < 100 * n + 100:
        tries += 1
        i, j = rng.choice(len(names), 2, replace=False)
        a = people[names[i]][rng.integers(len(people[names[i]]))]
        b = people[names[j]][rng.integers(len(people[names[j]]))]
        if (a, b) not in seen and (b, a) not in seen:
            seen.add((a, b))
            diff.append((a, b, False))
    return same + diff


def _split_lfw(rel: str) -> tuple[str, int]:
    person = rel.split("/")[0]
    number = os.path.splitext(os.path.basename(rel))[0].rsplit("_", 1)[-1]
    return person, int(number)


def write_pairs(pairs, path: str, header: str):
    """LFW pairs.txt layout: ``name n1 n2`` (same person), ``name1 n1 name2 n2``
    (different), after ``#`` comment lines."""
    lines = [f"# {header}"]
    for a, b, same in pairs:
        (pa, na), (pb, nb) = _split_lfw(a), _split_lfw(b)
        lines.append(f"{pa}\t{na}\t{nb}" if same else f"{pa}\t{na}\t{pb}\t{nb}")
    with atomic_write(path) as f:  # creates the folder; no half-written pairs file
        f.write("\n".join(lines) + "\n")


def read_pairs(path: str):
    """Pairs from an LFW-layout file (ours, or LFW's own pairs.txt: its all-numbers header
    lines and ``#`` comments are skipped); photo names as ``Person/Person_NNNN.jpg``."""
    pairs = []
    with open(path) as f:
        for k, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#") or all(p.isdigit() for p in parts):
                continue
            try:
                if len(parts) == 3:
                    p, a, b = parts[0], int(parts[1]), int(parts[2])
                    pairs.append((f"{p}/{p}_{a:04d}.jpg", f"{p}/{p}_{b:04d}.jpg", True))
                elif len(parts) == 4:
                    pa, a, pb, b = parts[0], int(parts[1]), parts[2], int(parts[3])
                    pairs.append((f"{pa}/{pa}_{a:04d}.jpg", f"{pb}/{pb}_{b:04d}.jpg", False))
                else:
                    raise ValueError
            except ValueError:
                raise ValueError(f"{path}:{k}: expected 'name n1 n2' or 'name1 n1 name2 n2', "
                                 f"got {line.strip()!r}") from None
    if not pairs:
        raise ValueError(f"no pairs in {path}")
    return pairs
