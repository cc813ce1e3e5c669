"""What every DeepFashion config shares: its arguments, data, AlexNet and optimizer, so that pretext and
fine-tuning runs prepare the same images once and build the same backbone. A library, not an experiment."""

from __future__ import annotations

import os
import pathlib

import ml_collections

from configs import common

VARIANTS = ('benchmark', 'sample', 'csv')
SAMPLE_ENV = 'JAXSSL_DEEPFASHION_SAMPLE_DIR'
DATASET = {'benchmark': 'deepfashion', 'sample': 'deepfashion_attr', 'csv': 'image_csv'}


def sample_dir() -> str:
  """$JAXSSL_DEEPFASHION_SAMPLE_DIR, else ../shared/data/deepfashion_attr_sample beside the checkout."""
  return os.environ.get(SAMPLE_ENV) or str(
      pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'deepfashion_attr_sample')


def parse(arg: str | None, **more) -> ml_collections.ConfigDict:
  """``VARIANT[,quick]`` (or ``variant=VARIANT,quick=BOOL``) -> ``.variant``, ``.quick`` (and ``more``)."""
  return common.parse_arg(arg, variant=common.Choice(*VARIANTS), quick=False, **more)


IMAGENET_ALEXNET = 'alexnet-owt-7be5be79.safetensors'   # torchvision's IMAGENET1K_V1 AlexNet, converted (README)


def use_imagenet_alexnet(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """torchvision's AlexNet (64-192-384-256-256, no normalization, fc 4096) started from its ImageNet weights
  (``init_from``: the file, default ``$JAXSSL_IMAGENET_ALEXNET`` else IMAGENET_ALEXNET in the working directory;
  a missing file is one line), inputs standardized with ImageNet's mean and std as those weights expect."""
  c.model.options.update({'arch': 'torchvision', 'norm': 'none', 'width': 1.0, 'fc_width': 4096})
  c.data.normalize = 'imagenet'
  c.init_from = os.environ.get('JAXSSL_IMAGENET_ALEXNET') or IMAGENET_ALEXNET
  return c


def base_config(variant: str, quick: bool) -> ml_collections.ConfigDict:
  """common.base_config() with DeepFashion's data, AlexNet (BatchNorm) and AdamW; ``quick``: small images and
  a narrow AlexNet."""
  c = common.base_config()
  c.data = common.data_config(
      DATASET[variant],
      eval_split='val',
      source_dir=sample_dir() if variant == 'sample' else '',  # benchmark: '' = $JAXSSL_DEEPFASHION_DIR
      image_size=256,          # stored size (square; the original aspect is kept in image_hw)
      crop_bbox=False,         # crop every image to its bounding box before resizing
      image_format='jpeg',     # or 'png' (lossless, ~5x larger)
      prepare_workers=0)       # threads decoding images at prepare time (0: one per CPU)
  c.model.name = 'alexnet'
  # arch='torchvision' with norm='none': torchvision's AlexNet, which takes its ImageNet weights (init_from a
  # .safetensors/.pth file, jaxssl/models/torchvision_weights.py; with data.normalize='imagenet').
  c.model.options = ml_collections.ConfigDict({'dropout': 0.5, 'norm': 'batch', 'fc_width': 4096, 'width': 1.0,
                                               'arch': 'paper'})
  c.batch_size = 128
  c.eval_batch_size = 256
  # AdamW: the attribute loss is a mean over attributes (1/A of one attribute's gradient each); Adam's
  # per-parameter scale lets the attribute head learn anyway (SGD at 0.01 left the sample at its priors).
  c.optim.name = 'adamw'
  c.optim.lr = 1e-3
  c.optim.weight_decay = 0.01
  c.optim.warmup_epochs = 1.0
  if quick:
    c.data.image_size = 112
    c.model.options.width = 0.5
    c.model.options.fc_width = 512
  return c


def pretext_schedule(c: ml_collections.ConfigDict, variant: str, quick: bool) -> ml_collections.ConfigDict:
  """Batch, length and evaluation of the pretext configs (rotation, jigsaw): 30 epochs of 64 images on the
  benchmark, 100 of 32 on the sample, 100 steps of 16 for a quick look."""
  c.batch_size, c.num_epochs, c.eval_every, c.checkpoint_every = 64, 30.0, 3000, 1500
  if variant == 'sample':
    c.batch_size, c.num_epochs = 32, 100.0
    c.eval_every = c.checkpoint_every = 200
  if quick:
    common.make_quick(c, train_limit=0, eval_limit=0, batch_size=16, total_steps=100, eval_every=50)
  return c


def two_view_task(c: ml_collections.ConfigDict, quick: bool, **options) -> ml_collections.ConfigDict:
  """The task options SimCLR and BYOL share here (two views: 224 px crops, or the quick image size; flip; colour
  jitter; grayscale), then ``options``. The backbone gets no dropout: the multi-task model adds its own when it
  loads these weights."""
  c.model.options.dropout = 0.0
  return ml_collections.ConfigDict({'crop_size': c.data.image_size if quick else 224, 'crop_scale': (0.08, 1.0),
                                    'flip': 0.5, 'jitter_prob': 0.8, 'grayscale_prob': 0.2, **options})
