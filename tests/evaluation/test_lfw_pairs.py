"""evaluation/lfw_pairs.py: seeded, distinct pairs that survive a round trip through the
LFW pairs.txt layout (ours and LFW's own)."""

from __future__ import annotations

import pytest

from evaluation import lfw_pairs


def test_pairs_are_seeded_distinct_and_round_trip(tmp_path):
    people = {f"Person_{c}": [f"Person_{c}/Person_{c}_{i:04d}.jpg" for i in range(1, n + 1)]
              for c, n in zip("ABCDEF", (1, 2, 3, 5, 1, 4))}
    pairs = lfw_pairs.make_pairs(people, 8, seed=0)
    assert pairs == lfw_pairs.make_pairs(people, 8, seed=0)
    assert pairs != lfw_pairs.make_pairs(people, 8, seed=1)
    same = [p for p in pairs if p[2]]
    diff = [p for p in pairs if not p[2]]
    assert len(same) == 8 and len(diff) == 8
    assert len({(a, b) for a, b, _ in pairs}) == 16
    assert all(a.split("/")[0] == b.split("/")[0] and a != b for a, b, _ in same)
    assert all(a.split("/")[0] != b.split("/")[0] for a, b, _ in diff)
    path = tmp_path / "pairs.txt"
    lfw_pairs.write_pairs(pairs, str(path), "test pairs")
    assert lfw_pairs.read_pairs(str(path)) == pairs
    # LFW's own pairs.txt layout (a header of numbers) reads too
    lfw = tmp_path / "lfw_pairs.txt"
    lfw.write_text("1\t2\nAbel_Pacheco\t1\t4\nAbdel_Madi_Shabneh\t1\tDean_Barker\t1\n")
    assert lfw_pairs.read_pairs(str(lfw)) == [
        ("Abel_Pacheco/Abel_Pacheco_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0004.jpg", True),
        ("Abdel_Madi_Shabneh/Abdel_Madi_Shabneh_0001.jpg", "Dean_Barker/Dean_Barker_0001.jpg",
         False)]
    bad = tmp_path / "bad.txt"
    bad.write_text("just_a_name\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        lfw_pairs.read_pairs(str(bad))
