"""The DeepFashion multi-task model: AlexNet (BatchNorm, from scratch), a softmax category head and a sigmoid
attribute head on one network. Images are prepared once at 256 px; training takes a random square of the shorter
side resized to 227 (evaluation the centred square). Training evaluates on ``val``; at the end the attribute
threshold is chosen on ``val`` (thresholds.json) and ``test`` is scored at it (attributes_test_step<N>.json).

  python -m jaxssl.main --config configs/deepfashion_multitask.py --workdir runs/df_multitask \\
      --config.data.source_dir=/path/to/DeepFashion/Category_and_Attribute_Prediction_Benchmark
  python -m jaxssl.main --config configs/deepfashion_multitask.py --workdir runs/df_multitask --mode=predict

``--mode=predict`` writes predictions/category.csv and attribute.csv for ``test``. From a pretext backbone
(configs/deepfashion_rotation.py, deepfashion_jigsaw.py): add ``--config.init_from=runs/df_rotation
--config.optim.backbone_lr_scale=0.1``. Quick look on the real sample (200 steps of 32 images, 112 px stored,
96 px crops, AlexNet width 0.5 / fc 512):

  python -m jaxssl.main --config configs/deepfashion_multitask.py:sample,quick --workdir /tmp/df_quick

Expected: benchmark to be measured (not on this machine; 20 epochs of AlexNet need an accelerator);
sample,quick test macro F1 0.257, mean-sample F1 0.592 at threshold 0.33 (measured 2026-11-30, 2-core CPU, about
1 min), no better than the training priors: the sample checks the path. History: docs/config_history.md.

Arguments (``VARIANT[,quick]``, or ``variant=VARIANT,quick=true``):
  benchmark   the official benchmark (289,222 images, 46 of 50 categories occur, 1,000 attributes; manual
              download, see jaxssl/data/deepfashion.py or the README); default
  sample      the attribute-challenge layout of ../shared/data/deepfashion_attr_sample (357 real photos, 26
              attributes in 6 exclusive groups, no categories: attribute-only), or $JAXSSL_DEEPFASHION_SAMPLE_DIR;
              train/val/test held out 80/10/10 by position
  csv         an image folder with train.csv / val.csv / test.csv (file_path, category, attributes);
              --config.data.source_dir=DIR
  quick       small images and a narrow AlexNet for a look in minutes on a CPU
  imagenet    torchvision's AlexNet from its ImageNet weights (seed experiment 002's third column), inputs
              standardized as ImageNet's; --config.init_from=FILE.safetensors (default $JAXSSL_IMAGENET_ALEXNET,
              else alexnet-owt-7be5be79.safetensors here; README: where to get it); quick keeps the full width

Seed experiment 002 (scratch vs. pretext vs. ImageNet-pretrained, category top-1/3/5 and attributes) is three
runs of this config, compared with ``python -m jaxssl.report``:

  python -m jaxssl.main --config configs/deepfashion_multitask.py --workdir runs/df_scratch
  python -m jaxssl.main --config configs/deepfashion_rotation.py --workdir runs/df_rotation
  python -m jaxssl.main --config configs/deepfashion_multitask.py --workdir runs/df_mt_rotation \\
      --config.init_from=runs/df_rotation --config.optim.backbone_lr_scale=0.1
  python -m jaxssl.main --config configs/deepfashion_multitask.py:imagenet --workdir runs/df_mt_imagenet \\
      --config.init_from=alexnet-owt-7be5be79.safetensors
  python -m jaxssl.report runs/df_scratch runs/df_mt_rotation runs/df_mt_imagenet --out runs/seed002

(each with ``--config.data.source_dir=DIR``). The ImageNet row's AlexNet is torchvision's (no BatchNorm, other
widths); for the same network in every row add ``--config.model.options.arch=torchvision
--config.model.options.norm=none`` to the other three (their BatchNorm-free AlexNet trains less easily).
"""

import ml_collections

from configs import common, deepfashion_common


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """The category + attributes config for ``arg`` (variant and ``quick``: see the module docstring)."""
  a = deepfashion_common.parse(arg, imagenet=False)
  c = deepfashion_common.base_config(a.variant, a.quick)
  if a.imagenet:
    deepfashion_common.use_imagenet_alexnet(c)
    c.optim.backbone_lr_scale = 0.1   # as from a pretext backbone: the weights are worth keeping
  c.tasks.multitask = ml_collections.ConfigDict({
      'category_weight': 1.0, 'attribute_weight': 1.0,
      # sqrt(neg/pos) on the benchmark's 1,000 mostly rare attributes; the sample's 6 groups are balanced enough.
      'pos_weight': 'none' if a.variant == 'sample' else 'sqrt', 'pos_weight_max': 50.0,
      'crop': 'short_side', 'crop_size': 227, 'flip': True, 'feature': '', 'pool': 'flatten'})
  c.num_epochs = 20.0
  c.eval_every = 3000
  c.checkpoint_every = 1500
  if a.variant == 'sample':     # 286 training images: epochs are 2 steps of 128
    c.batch_size = 32
    c.num_epochs = 60.0
    c.eval_every = c.checkpoint_every = 100
  if a.quick:
    c.tasks.multitask.crop_size = 96
    common.make_quick(c, train_limit=0, eval_limit=0, batch_size=32, total_steps=200, eval_every=50)
  return c
