#!/usr/bin/env bash
# Fit 3D face meshes to the built-in example photos (or to your own: pass --img DIR) and
# draw each fitted mesh on its photo: results in ./results/fit_example/vis/.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "from face3d.examples import materialize_examples as m; m('datasets/example/images')"
python 3ddfa/inference.py --img_list datasets/example/images/file_list.txt \
    --img_prefix datasets/example/images --save_dir ./results/fit_example --vis "$@"
echo "fitted meshes drawn on the photos: $(pwd)/results/fit_example/vis/"
