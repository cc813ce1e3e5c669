"""Inpainting (context encoder, Pathak et al. 2016) pretraining of CifarNet on the Fashion-MNIST training images,
without their labels: a region of every image is replaced in the pipeline (the backbone never sees what was
there), CifarNet encodes the rest, and a decoder head (jaxssl/tasks/decoder.py, from the 7x7x64 ``pool2`` map)
paints the whole image; the loss is the squared error over the removed pixels. Held-out figures (test split):
``inpainting/psnr`` and ``inpainting/mse`` over the removed pixels, against ``inpainting/fill_psnr``: what the
fill itself scores there. Every evaluation writes ``reconstructions_test_step<N>.png`` (masked input, original,
output, and the input with the output pasted into the hole).

  python -m jaxssl.main --config configs/fmnist_inpainting.py --workdir runs/fmnist_inpainting
  python -m jaxssl.main --config configs/fmnist_linear.py:pool2 --workdir runs/linear_inpainting_pool2 \\
      --config.init_from=runs/fmnist_inpainting

Quick look (200 steps of 64 images on 6400 training images, evaluated on the first 1000 test images):

  python -m jaxssl.main --config configs/fmnist_inpainting.py:quick --workdir /tmp/fmnist_inpainting_quick

Expected: full runs to be measured; :quick 15.4 dB PSNR over the hole, where the mean-grey fill scores 8.9 dB
(online probe of pool2 73.9%, its k-NN 57.5%; measured 2026-11-30, 2-core CPU shared with other jobs, oneDNN
convolutions, 2.4 min).

Arguments (``MASK``, ``FILL``, ``LAYER``, ``quick``, or ``key=value``):
  center       a centred square of half the side, a quarter of the image (default; the paper's central region)
  blocks       3 squares of a quarter of the side each, at random places (the paper's random blocks)
  size=X       the square's side as a fraction of the image side (default 0.5 center, 0.25 blocks)
  mean         fill the hole with the dataset's mean grey (default; the paper's)
  zero         fill with black (Fashion-MNIST's background)
  noise        fill with uniform random values
  LAYER        the CifarNet feature the decoder reads (default pool2)
  quick        the quick look above
"""

import ml_collections

from configs import common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """The inpainting config for ``arg`` (the arguments: see the module docstring)."""
  a = common.parse_arg(arg, mask=common.Choice('center', 'blocks'), fill=common.Choice('mean', 'zero', 'noise'),
                       size=0.0, layer=common.Word('pool2'), quick=False)
  if not 0 <= a.size <= 1:
    raise ValueError(f'config argument size={a.size}: the side of the hole is a fraction of the image side')
  c = common.base_config()
  c.tasks.inpainting = ml_collections.ConfigDict({
      'mask': a.mask, 'mask_size': float(a.size or (0.5 if a.mask == 'center' else 0.25)), 'num_blocks': 3,
      'fill': a.fill, 'context_weight': 0.0, 'feature': a.layer, 'decoder_width': 128, 'decoder_min_width': 32})
  # The online probe and k-NN monitor on the layer the decoder reads (configs/common.py).
  common.enable_online_probe(c, feature=a.layer)
  common.set_pretext_schedule(c, lr=1e-3)
  c.optim.update({'name': 'adamw', 'weight_decay': 1e-4})   # as configs/fmnist_autoencoder.py
  if a.quick:  # as the autoencoder's quick look
    common.make_quick(c, train_limit=6400, eval_limit=1000, batch_size=64, total_steps=200, eval_every=100)
  return c
