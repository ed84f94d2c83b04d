"""Split ../shared/data/lfw by person for a held-out evaluation, as used for the README's
quality tables: training photos from people A-L, evaluation photos from people M-R.

    python experiments/lfw_split.py [--lfw DIR] [--out datasets/lfw_split]

Writes (as symbolic links, nothing copied):
  OUT/train/<Person>/<photo>.jpg    2,000 photos drawn (with fixed seeds) from people A-L
  OUT/heldout/<Person>              every person M-R (1,441 people), for --img/--pairs_root
"""

import argparse
import os
import random

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lfw", default=os.path.join(REPO, "..", "shared", "data", "lfw"))
    p.add_argument("--out", default=os.path.join(REPO, "datasets", "lfw_split"))
    p.add_argument("--num_train", type=int, default=2000)
    args = p.parse_args()
    lfw = os.path.abspath(args.lfw)
    if not os.path.isdir(lfw):
        raise SystemExit(f"error: LFW folder not found: {lfw}")
    people = sorted(os.listdir(lfw))
    train = [os.path.join(person, f) for person in people if person[0] <= "L"
             for f in sorted(os.listdir(os.path.join(lfw, person))) if f.endswith(".jpg")]
    # Two seeded draws (3,000 then 2,000): the exact recipe of the README's gpu_lfw2k run.
    random.Random(0).shuffle(train)
    train = sorted(train[:3000])
    random.Random(1).shuffle(train)
    train = sorted(train[:args.num_train])
    for rel in train:
        dst = os.path.join(args.out, "train", rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.lexists(dst):
            os.symlink(os.path.join(lfw, rel), dst)
    held = os.path.join(args.out, "heldout")
    os.makedirs(held, exist_ok=True)
    heldout = [person for person in people if person[0] > "L"]
    for person in heldout:
        if not os.path.lexists(os.path.join(held, person)):
            os.symlink(os.path.join(lfw, person), os.path.join(held, person))
    print(f"{len(train)} training photos in {args.out}/train, "
          f"{len(heldout)} held-out people in {held}")


if __name__ == "__main__":
    main()
