"""Fit 3D face meshes to photos (the original's 3DDFA step, done with MediaPipe Face Mesh).

    python 3ddfa/inference.py --img_list LIST --img_prefix DIR --save_dir OUT
    python 3ddfa/inference.py --img photo_or_folder --save_dir OUT --vis

Each photo gets SAVE_DIR/<its relative path>.npz, extension kept (a/face.jpg -> a/face.jpg.npz;
fits named a/face.npz by older versions are still read). Re-running resumes: complete, valid
fits are skipped, failed photos retried. Run with --help for every option; the work is done
by ``face3d.batch_fit``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from face3d.batch_fit import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
