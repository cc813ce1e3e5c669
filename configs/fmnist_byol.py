"""BYOL pretraining (Grill et al. 2020) on the Fashion-MNIST training images, without their labels: the online
network (backbone, projector, predictor) predicts a moving-average target network's projection of another view
of the same image; no negatives. Views as configs/fmnist_simclr.py's, with BYOL's asymmetric blur (always on the
first view, 0.1 on the second) and solarization (0.2, second view); the target's momentum rises from 0.996 to 1
on BYOL's cosine schedule. BYOL's recipe: LARS at lr 0.2 x batch / 256, weight decay 1.5e-6, 10 warmup epochs,
cosine; 100 epochs of 256 images:

  python -m jaxssl.main --config configs/fmnist_byol.py --workdir runs/fmnist_byol
  python -m jaxssl.main --config configs/fmnist_byol.py:resnet18_cifar --workdir runs/fmnist_byol_r18

Held-out figures at every evaluation: ``byol/cos`` (mean cosine between the predictions and the target's
projections of the other view) and ``knn/top1``, a 200-NN probe of the representation with the labels. The
target network is saved with the run (under the head) and a resumed run continues it exactly; ``init_from`` and
the probes take the online backbone. Quick look, 150 steps of 64 images on 6400 training images, evaluated on the
first 1000 test images (ResNet-18: 60 steps of 32 images):

  python -m jaxssl.main --config configs/fmnist_byol.py:quick --workdir /tmp/fmnist_byol_quick

Expected: full runs to be measured (hours on 2 CPU cores). :quick (measured 2026-11-30, 2-core CPU shared with
other jobs, oneDNN convolutions, 87 s): loss 4.19 -> 1.73 (test), held-out ``byol/cos`` 0.568 (about 0 untrained);
``knn/top1`` 69.7% (the untrained network: 72.5%): early BYOL reshapes the features before it improves them.
:resnet18_cifar,quick: not yet measured.

Arguments: ``cifarnet`` (default) or ``resnet18_cifar`` (or ``model=...``), ``quick``.
"""

import ml_collections

from configs import common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """The BYOL run of ``arg`` (see the module docstring)."""
  a = common.parse_arg(arg, model=common.Choice('cifarnet', 'resnet18_cifar'), quick=False)
  c = common.two_view_config(a.model, a.quick)
  # Blur at 28 px: a 3-tap kernel, sigma 0.1-1 pixel (SimCLR's 0.1-2 is for 224 px views).
  c.tasks.byol = ml_collections.ConfigDict({
      'crop_scale': (0.2, 1.0), 'flip': 0.5, 'jitter_prob': 0.8, 'brightness': 0.4, 'contrast': 0.4,
      'blur_prob': (1.0, 0.1), 'blur_sigma': (0.1, 1.0), 'solarize_prob': (0.0, 0.2),
      'proj_hidden': 1024, 'proj_dim': 256, 'pred_hidden': 1024, 'base_momentum': 0.996})
  common.set_lars(c, lr=0.2, scaling='linear', weight_decay=1.5e-6, warmup_epochs=0.5 if a.quick else 10.0)
  return c
