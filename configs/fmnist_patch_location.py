"""Relative patch location (Doersch et al. 2015) pretraining of CifarNet on the Fashion-MNIST training images,
without their labels: a centre patch and one of its 8 neighbours, CifarNet on each (shared weights), their fc2
features concatenated, two 512-wide fc layers and an 8-way classifier. Held-out figure: ``patch_location/acc`` on
the test images (chance 12.5%), and ``acc_0`` .. ``acc_7`` per position (0 top-left ... 7 bottom-right).

  python -m jaxssl.main --config configs/fmnist_patch_location.py --workdir runs/fmnist_patch_location
  python -m jaxssl.main --config configs/fmnist_linear.py:pool2 --workdir runs/fmnist_linear_pool2_patch \\
      --config.init_from=runs/fmnist_patch_location

Sizes. Three patches and two gaps must fit across a 28 px image. The images are zero-padded to 32x32
(``data.pad_to``; their background is already 0, so the border adds nothing a patch could tell apart) and cut into
7x7 patches with a 3 px gap (about half the patch, the paper's ratio) and 1 px of jitter: the layout spans
3*7 + 2*3 + 2*1 = 29 px and can sit at 4 offsets per axis; the two patches are 2 to 4 px apart. CifarNet's fc1
fixes its input size, so each 7x7 patch is fed centred on a 28x28 black canvas (``canvas_size``): the backbone is
built for 28x28 inputs, like every Fashion-MNIST classifier config, and the linear probe, fine-tuning and k-NN
take this checkpoint as they take a rotation run's (a backbone built for 7x7 patches, as the jigsaw's is for its
tiles, would not load into them). The convolutions see the patch; the padding costs compute, not meaning.

Quick look, 200 steps of 64 images on 6400 training images, evaluated on the first 1000 test images:

  python -m jaxssl.main --config configs/fmnist_patch_location.py:quick --workdir /tmp/fmnist_patch_location_quick

Expected: full run to be measured; :quick 51.6% patch_location/acc (chance 12.5%), per position from 32.5%
(bottom-right) to 73.9% (top-left); online probe of pool2 83.2% (probe/top1), k-NN 67.3% (measured 2026-11-30,
2-core CPU, oneDNN convolutions, 2m36s on a busy machine; the same patch figures without the online probe). A
linear probe of its pool2 (``configs/fmnist_linear.py:pool2``, 300 steps, first 2000 test images):
86.0% test top-1, against 85.5% for a random backbone with the same command that day.

Arguments: ``quick`` (or ``quick=true``).
"""

import ml_collections

from configs import common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """The patch-location pretraining config for ``arg`` (``quick``: see the module docstring)."""
  a = common.parse_arg(arg, quick=False)
  c = common.base_config()
  c.data.pad_to = 32
  c.tasks.patch_location = ml_collections.ConfigDict({
      'patch_size': 7, 'gap': 3, 'jitter': 1, 'canvas_size': 28, 'hidden_sizes': (512, 512)})
  common.set_pretext_schedule(c, lr=0.02)   # 128 pairs per step
  # The online probe and k-NN of pool2 (configs/common.py). CifarNet is built for the 28x28 canvas, so the probe
  # feeds the centred 28x28 square of the padded images: the Fashion-MNIST image itself.
  common.enable_online_probe(c, feature='pool2', crop=28)
  if a.quick:
    common.make_quick(c, train_limit=6400, eval_limit=1000, batch_size=64, total_steps=200, eval_every=100)
  return c
