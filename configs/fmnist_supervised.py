"""Supervised CifarNet on Fashion-MNIST: the baseline every pretext task is measured against.

Command (the README's first command runs exactly this):

  python -m jaxssl.main --config configs/fmnist_supervised.py --workdir runs/fmnist_supervised

Expected: >= 90% test top-1 after 10 epochs (2340 steps of batch 256; SGD-momentum, cosine, crop+flip).
Measured 2026-11-21 on 2 CPU cores: 91.56% test top-1 (top-5 99.91%) in 85 min wall-clock, sharing the 2 cores with other jobs.
Measured 2026-11-26 with oneDNN convolutions (conv_impl=auto): 91.56% test top-1 (top-5 99.92%) in 10.5 min.
Measured figures are in the README. Quick look (a few minutes on 2 CPU cores):

  python -m jaxssl.main --config configs/fmnist_supervised.py:quick --workdir /tmp/fmnist_quick
"""

import ml_collections


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = 'train'
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = 'fashion_mnist'
  c.data.data_dir = ''        # prepared tfds data; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.data.source_dir = ''      # folder with the four official .gz files; '' = $JAXSSL_FASHION_MNIST_DIR,
                              # /usr/share/datasets/fashion-mnist, then the official download
  c.data.pad_to = 0           # > 28: zero-pad the 28x28 images to this size (32: the LeNet/CIFAR input size)
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  c.data.train_limit = 0      # > 0: only the first N training records (quick runs)
  c.data.eval_limit = 0
  c.data.train_fraction = 1.0  # < 1: a class-stratified random subset of the training records (after train_limit)
  c.data.subset_seed = 0       # which subset
  c.data.num_workers = 0      # grain worker processes (0: in the main process)
  c.data.read_threads = 1     # threads preparing batches in each process
  c.data.prefetch_batches = 4  # batches prepared ahead (grain's default of 500 starves a small CPU's step)

  c.model = ml_collections.ConfigDict()
  c.model.name = 'cifarnet'
  c.model.options = ml_collections.ConfigDict({'dropout': 0.0})
  # 'auto': on a single CPU device oneDNN's convolutions as custom calls (jaxssl/ops/onednn.py; 4-6x faster
  # training than XLA's there, same numbers to float32 rounding), or where oneDNN cannot be built gathered-window
  # (im2col) matmuls (jaxssl/ops/conv.py); XLA's own on GPU/TPU. 'onednn', 'im2col' or 'xla' force one. With
  # oneDNN's convolutions, training BatchNorm (ResNets, AlexNet norm='batch') is oneDNN's too (jaxssl/ops/norm.py).
  c.model.conv_impl = 'auto'

  c.tasks = ml_collections.ConfigDict()
  c.tasks.classify = ml_collections.ConfigDict({'crop_padding': 2, 'flip': True, 'feature': '',
                                                'freeze_backbone': False, 'pool': 'flatten'})

  # Transfer (configs/fmnist_linear.py, fmnist_finetune.py, fmnist_knn.py): the backbone of another run.
  c.init_from = ''             # '' (from scratch) | a workdir | <workdir>/checkpoints/<step>
  c.init_step = -1             # with a workdir: which step (-1 = latest)

  c.batch_size = 256
  c.eval_batch_size = 500
  c.num_epochs = 10.0
  c.total_steps = 0           # > 0 overrides num_epochs

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'sgd'
  c.optim.lr = 0.05
  c.optim.momentum = 0.9
  c.optim.nesterov = True
  c.optim.weight_decay = 5e-4
  c.optim.schedule = 'cosine'
  c.optim.warmup_epochs = 0.5
  c.optim.step_size_epochs = 3.0   # schedule='step' only: lr *= gamma every step_size_epochs
  c.optim.gamma = 0.1
  c.optim.grad_clip_norm = 0.0
  c.optim.trainable = 'all'        # 'all' | 'heads' (linear probe) | 'last:K' (last K backbone layers + heads)
  c.optim.backbone_lr_scale = 1.0  # the backbone's lr multiplier (0: frozen for the optimizer)

  # --mode=knn: weighted k-NN on L2-normalized backbone features (Wu et al. 2018's 200-NN protocol).
  c.knn = ml_collections.ConfigDict({'k': 200, 'temperature': 0.07, 'feature': '', 'pool': 'avg',
                                     'batch_size': 500})

  c.log_every = 50
  c.eval_every = 470           # ~2 epochs
  c.checkpoint_every = 470
  c.keep_checkpoints = 3
  c.eval_step = -1             # --mode=eval: which checkpoint (-1 = latest)

  if arg == 'quick':
    make_quick(c, train_limit=10240, eval_limit=0, batch_size=256, total_steps=120, eval_every=40)
  elif arg:
    raise ValueError(f"unknown config argument '{arg}'; this config knows: quick")
  return c


def make_quick(c: ml_collections.ConfigDict, *, train_limit: int, eval_limit: int, batch_size: int,
               total_steps: int, eval_every: int) -> ml_collections.ConfigDict:
  """The ':quick' variant every config offers: a few minutes on a slice of the data, no warmup."""
  c.data.train_limit, c.data.eval_limit = train_limit, eval_limit
  c.batch_size, c.total_steps = batch_size, total_steps
  c.optim.warmup_epochs = 0.0
  c.eval_every = c.checkpoint_every = eval_every
  c.log_every = 10
  return c


def parse_variant(arg: str, variants, default: str, config_name: str) -> tuple[str, bool]:
  """``VARIANT[,quick]`` -> (variant, quick): the argument of configs that come in named variants."""
  parts = [p for p in (arg or '').split(',') if p]
  names = [p for p in parts if p != 'quick'] or [default]
  if len(names) != 1 or names[0] not in variants:
    raise ValueError(f"unknown config argument '{arg}' for {config_name}; it knows: {', '.join(variants)}, each "
                     "optionally followed by ',quick'")
  return names[0], 'quick' in parts


def set_pretext_schedule(c: ml_collections.ConfigDict, *, lr: float) -> ml_collections.ConfigDict:
  """The Fashion-MNIST pretext runs' schedule: 15 epochs of 128 source images, SGD at ``lr``."""
  c.batch_size = 128
  c.eval_batch_size = 250
  c.num_epochs = 15.0
  c.optim.lr = lr
  c.optim.warmup_epochs = 0.5
  c.eval_every = 936           # ~2 epochs
  c.checkpoint_every = 468
  return c
