"""SimCLR pretraining (Chen et al. 2020) on the Fashion-MNIST training images, without their labels: two random
views of every image (random resized crop, flip, intensity jitter), a projector MLP, NT-Xent with temperature 0.5
against the whole batch's other views. SimCLR's recipe: LARS (trust coefficient 1e-3, weight decay 1e-6, no decay
or trust scaling of biases and BatchNorm) at lr 0.075 x sqrt(batch) (the paper's scaling for small batches), 10
warmup epochs, then cosine; 100 epochs of 256 images (512 views) per step:

  python -m jaxssl.main --config configs/fmnist_simclr.py --workdir runs/fmnist_simclr
  python -m jaxssl.main --config configs/fmnist_simclr.py:resnet18_cifar --workdir runs/fmnist_simclr_r18

Held-out figures at every evaluation: ``simclr/acc`` (each view finds its partner among the other
2 x eval_batch_size - 1 views of its eval batch) and ``knn/top1``, a 200-NN probe of the representation (the
projector's input) with the labels. Then probe or fine-tune the backbone as for any pretext run
(configs/fmnist_linear.py, fmnist_knn.py, fmnist_finetune.py with ``--config.init_from``). Quick look, 150 steps
of 64 images on 6400 training images, evaluated on the first 1000 test images (ResNet-18 is about ten times
heavier: its quick look is 60 steps of 32 images):

  python -m jaxssl.main --config configs/fmnist_simclr.py:quick --workdir /tmp/fmnist_simclr_quick

Expected: full runs to be measured (hours on 2 CPU cores). :quick (measured 2026-11-30, 2-core CPU shared with
other jobs, oneDNN convolutions, 110 s): train loss 4.55 -> 3.68; held-out partner retrieval ``simclr/acc``
11.9% among 499 candidates (the untrained network: 5.1%, chance 0.2%); ``knn/top1`` 72.5%, the same as the
untrained network's (72.5%): 150 steps teach the pretext, not yet better features than random ones. :resnet18_cifar,
quick: not yet measured.

Arguments: ``cifarnet`` (default) or ``resnet18_cifar`` (or ``model=...``), ``quick``.
"""

import ml_collections

from configs import common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """The SimCLR run of ``arg`` (see the module docstring)."""
  a = common.parse_arg(arg, model=common.Choice('cifarnet', 'resnet18_cifar'), quick=False)
  c = common.two_view_config(a.model, a.quick)
  # Views of 28 px garments: crops of at least 20% of the image (ImageNet's 8% keeps too little of a garment this
  # small); one channel, so intensity jitter only; no blur (SimCLR's CIFAR runs leave it out at this size).
  c.tasks.simclr = ml_collections.ConfigDict({
      'temperature': 0.5, 'crop_scale': (0.2, 1.0), 'flip': 0.5, 'jitter_prob': 0.8, 'brightness': 0.4,
      'contrast': 0.4, 'blur_prob': (0.0, 0.0), 'proj_hidden': 512, 'proj_dim': 128})
  common.set_lars(c, lr=0.075, scaling='sqrt', weight_decay=1e-6, warmup_epochs=0.5 if a.quick else 10.0)
  return c
