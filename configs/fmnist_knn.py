"""Weighted k-NN probe of a backbone on Fashion-MNIST (no training): the 200 nearest training images by cosine
similarity of L2-normalized features vote with weight exp(sim / 0.07) (Wu et al. 2018). Spatial maps are
global-average-pooled (``--config.knn.pool=flatten`` to flatten). Without ``init_from`` it probes --workdir's own
latest checkpoint. Writes ``knn_test.json`` (top-1, top-5, per-class top-1).

  python -m jaxssl.main --config configs/fmnist_knn.py:conv2 --workdir runs/fmnist_knn_rotation \\
      --config.init_from=runs/fmnist_rotation

Expected: to be measured.

Arguments (``LAYER`` or ``layer=LAYER``):
  LAYER       the backbone layer (CifarNet: conv1, pool1, conv2, pool2, fc1, fc2); default: the backbone's output
"""

import ml_collections

from configs import common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, layer=common.Word(''))
  c = common.base_config()
  c.mode = 'knn'
  c.tasks.classify = common.classify_task()
  c.knn.feature = a.layer
  return c
