"""RotNet pretraining of CifarNet on the Fashion-MNIST training images, without their labels: every image is shown
in all four rotations and the network predicts which one it sees. Held-out figure: ``rotation/acc`` on the test
images (chance 25%). 15 epochs of 128 images (512 rotated examples) per step, 7020 steps, SGD at lr 0.02:

  python -m jaxssl.main --config configs/fmnist_rotation.py --workdir runs/fmnist_rotation

Quick look, 150 steps of 32 images on 6400 training images, evaluated on the first 1000 test images:

  python -m jaxssl.main --config configs/fmnist_rotation.py:quick --workdir /tmp/fmnist_rotation_quick

Expected: full run to be measured (hours on 2 CPU cores); :quick 89.2% rotation accuracy (measured 2026-11-26,
2-core CPU, oneDNN convolutions, 45 s). History (other convolution paths, longer runs): docs/config_history.md.

The online probe is on (configs/common.py ``online_probe``; it leaves every rotation figure bit for bit as it is,
tests/test_online_probe.py): a linear classifier of the labels and a 200-NN vote on the frozen pool2 feature.
:quick: rotation/acc 89.15%, probe/top1 77.0%, probe/knn_top1 57.0% (measured 2026-11-30, 2-core CPU, 89 s with
the probe and its k-NN at three evaluations). ``--config.online_probe.enabled=false`` turns it off.
"""

import ml_collections

from configs import common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """The RotNet config, with the online probe on (``quick``: the quick look of the module docstring)."""
  a = common.parse_arg(arg, quick=False)
  c = common.base_config()
  c.tasks.rotation = ml_collections.ConfigDict({'angles': (0, 90, 180, 270)})
  # 128 images per step; the rotation task makes 4x as many examples of them. lr 0.05 (the supervised setting)
  # stalls at chance on this task; 0.02 learns.
  common.set_pretext_schedule(c, lr=0.02)
  # The online probe: a linear classifier of the labels on pool2 (the layer that transfers best from rotation) and
  # a k-NN of the same layer at every evaluation, neither changing the pretraining (configs/common.py).
  common.enable_online_probe(c, feature='pool2')
  if a.quick:
    common.make_quick(c, train_limit=6400, eval_limit=1000, batch_size=32, total_steps=150, eval_every=50)
  return c
