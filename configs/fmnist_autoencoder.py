"""Autoencoder and denoising autoencoder pretraining of CifarNet on the Fashion-MNIST training images, without their
labels: CifarNet encodes an image, a decoder head (jaxssl/tasks/decoder.py: 3x3 convolutions and 2x nearest
upsampling from the 7x7x64 ``pool2`` map) rebuilds it at 28x28. Denoising variants corrupt the input in the
pipeline, per image and pixel, and the target stays the clean image. Held-out figures (test split):
``autoencoder/psnr`` (dB) and ``autoencoder/mse``; denoising also ``autoencoder/noisy_psnr``, what the noisy
input itself scores. Every evaluation writes ``reconstructions_test_step<N>.png`` (input, target, output).

  python -m jaxssl.main --config configs/fmnist_autoencoder.py --workdir runs/fmnist_autoencoder
  python -m jaxssl.main --config configs/fmnist_autoencoder.py:masking --workdir runs/fmnist_dae_masking
  python -m jaxssl.main --config configs/fmnist_linear.py:pool2 --workdir runs/linear_ae_pool2 \\
      --config.init_from=runs/fmnist_autoencoder

Quick look (200 steps of 64 images on 6400 training images, evaluated on the first 1000 test images):

  python -m jaxssl.main --config configs/fmnist_autoencoder.py:quick --workdir /tmp/fmnist_ae_quick
  python -m jaxssl.main --config configs/fmnist_autoencoder.py:gaussian,quick --workdir /tmp/fmnist_dae_quick

Expected: full runs to be measured. :quick 18.5 dB test PSNR (MSE 0.0156; the online probe of pool2 79.5%, its
k-NN 62.6%); :gaussian,quick 17.9 dB from inputs at 16.0 dB (measured 2026-11-30, 2-core CPU shared with other
jobs, oneDNN convolutions, 3.8 and 2.9 min). A linear probe of the :quick backbone's pool2 (fmnist_linear.py:pool2,
100 steps on 6400 images) ran unchanged from its checkpoint: 76.9% test top-1.

Arguments (``NOISE``, ``LOSS``, ``LAYER``, ``quick``, or ``key=value``):
  none         the plain autoencoder (default)
  gaussian     denoising: additive Gaussian noise, sigma ``level`` (default 0.2 of the pixel range)
  masking      denoising: each pixel zeroed with probability ``level`` (default 0.25)
  salt_pepper  denoising: each pixel black or white with probability ``level`` (default 0.1)
  level=X      the noise strength
  mse          loss: squared error of the output as pixel values (default)
  bce          loss: per-pixel binary cross-entropy of the output as logits
  LAYER        the CifarNet feature the decoder reads (default pool2; conv2, pool1, fc1 or fc2 also work)
  quick        the quick look above
"""

import ml_collections

from configs import common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """The (denoising) autoencoder config for ``arg`` (the arguments: see the module docstring)."""
  a = common.parse_arg(arg, noise=common.Choice('none', 'gaussian', 'masking', 'salt_pepper'), level=0.0,
                       loss=common.Choice('mse', 'bce'), layer=common.Word('pool2'), quick=False)
  if a.level < 0:
    raise ValueError(f'config argument level={a.level}: a noise strength must be >= 0')
  defaults = {'none': 0.0, 'gaussian': 0.2, 'masking': 0.25, 'salt_pepper': 0.1}  # autoencoder.DEFAULT_NOISE_LEVEL
  c = common.base_config()
  c.tasks.autoencoder = ml_collections.ConfigDict({
      'noise': a.noise, 'noise_level': float(a.level or defaults[a.noise]), 'reconstruction_loss': a.loss,
      'feature': a.layer, 'decoder_width': 128, 'decoder_min_width': 32})
  common.set_pretext_schedule(c, lr=1e-3)
  # AdamW at 1e-3, the usual optimizer of pixel-reconstruction models (SGD was not tried here).
  c.optim.name, c.optim.weight_decay = 'adamw', 1e-4
  # The online probe: a linear classifier of the labels on the layer the decoder reads, and a k-NN of it at every
  # evaluation, neither changing the pretraining (configs/common.py).
  common.enable_online_probe(c, feature=a.layer)
  if a.quick:
    common.make_quick(c, train_limit=6400, eval_limit=1000, batch_size=64, total_steps=200, eval_every=100)
  return c
