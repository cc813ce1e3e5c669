"""Supervised CifarNet on Fashion-MNIST: the baseline every pretext task is measured against. 10 epochs of batch
256 (2340 steps), SGD-momentum with a cosine schedule, crop+flip. The README's first command runs exactly this:

  python -m jaxssl.main --config configs/fmnist_supervised.py --workdir runs/fmnist_supervised

Expected: 91.6% test top-1, top-5 99.9% (measured 2026-11-26, 2-core CPU, oneDNN convolutions, 10.5 min).
Quick look (120 steps on 10,240 training images, a few minutes on 2 CPU cores):

  python -m jaxssl.main --config configs/fmnist_supervised.py:quick --workdir /tmp/fmnist_quick

Measurement history: docs/config_history.md.
"""

import ml_collections

from configs import common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, quick=False)
  c = common.base_config()
  c.tasks.classify = common.classify_task()
  if a.quick:
    common.make_quick(c, train_limit=10240, eval_limit=0, batch_size=256, total_steps=120, eval_every=40)
  return c
