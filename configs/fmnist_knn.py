"""Weighted k-NN probe of a backbone on Fashion-MNIST (no training): 200 nearest train images by cosine
similarity of L2-normalized features vote with weight exp(sim / 0.07) (Wu et al. 2018). The argument picks the
layer (default: the backbone's output, fc2 on CifarNet); spatial maps are global-average-pooled
(``--config.knn.pool=flatten`` to flatten instead).

  python -m jaxssl.main --config configs/fmnist_knn.py:conv2 --workdir runs/fmnist_knn_rotation \
      --config.init_from=runs/fmnist_rotation

Without ``init_from`` it probes --workdir's own latest checkpoint. Writes ``knn_test.json`` (top-1, top-5,
per-class top-1). Expected: to be measured.
"""

import ml_collections

from configs import fmnist_supervised


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  c = fmnist_supervised.get_config()
  c.mode = 'knn'
  c.knn.feature = arg
  return c
