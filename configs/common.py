"""What every config starts from, and the one grammar of a config's ``:arg``.

``base_config()`` holds a value for every key jaxssl reads, so that code reads ``config.key`` and a config file
states only how its experiment differs. Keys only one dataset reads live with that dataset's data: Fashion-MNIST's
(``data.pad_to``) here, DeepFashion's in configs/deepfashion_common.py; a key a dataset ignores would take an
override silently where ml_collections otherwise rejects it.

This is a library, not an experiment: configs import it (``from configs import common``); no config imports
another experiment's config.
"""

from __future__ import annotations

import difflib
from typing import Any

import ml_collections


def data_config(name: str, **dataset_keys: Any) -> ml_collections.ConfigDict:
  """The data keys of every dataset, then ``dataset_keys`` (a dataset's own, or a different default). Each dataset
  reads only its keys, but all are here so that any config can be pointed at another dataset on the command line
  (``--config.data.name=image_folder --config.data.source_dir=DIR``)."""
  d = {
      'name': name,
      'data_dir': '',           # prepared tfds data; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
      'source_dir': '',         # where the raw files are; '' = the dataset's own search (see jaxssl/data/)
      'train_split': 'train',
      'eval_split': 'test',
      'train_limit': 0,         # > 0: only the first N training records (quick runs)
      'eval_limit': 0,
      'train_fraction': 1.0,    # < 1: a class-stratified random subset of the training records (after train_limit)
      'subset_seed': 0,         # which subset (with subset_mode=kfold: which fold)
      'subset_mode': 'random',  # 'random' subset per seed, or disjoint stratified 'kfold' folds (data/subsets.py)
      # > 0: a class-stratified part of train_split (holdout_seed) is held out of training (before train_fraction)
      # as validation images: eval_split='holdout' evaluates on them (choose hyper-parameters there, not on test).
      'holdout_fraction': 0.0,
      'holdout_seed': 0,
      # -1 = auto, chosen at start from the cores and the backend (jaxssl/data/pipeline.py auto_settings; the run
      # logs them): on a CPU 0 workers, 1 thread, 4 ahead (the step needs the cores); with an accelerator
      # min(cores - 2, 16) workers x 2 threads, 2 ahead each.
      'num_workers': -1,        # grain worker processes (0: in the main process)
      'read_threads': -1,       # threads preparing batches in each process
      'prefetch_batches': -1,   # batches prepared ahead per process (grain's default of 500 starves a CPU's step)
      # JPEG training images decoded once into a uint8 file beside the prepared data, read from there after
      # (jaxssl/data/decoded.py; the same pixels): 'auto' = with an accelerator (the cores cannot decode as fast as
      # it trains) in a one-process run, not on a CPU (the step needs the cores, and decoding is 3-20x faster than
      # it) nor across hosts (a shared network folder's memory maps are not coherent: 'on' where it is local).
      'decoded_cache': 'auto',
      'normalize': 'dataset',   # its own mean/std, or 'imagenet' for torchvision weights (data/normalization.py)
      # name='tfds:NAME[/CONFIG][:VERSION]' (jaxssl/data/tfds_any.py): which features are the image and the label
      # ('' = found from the dataset's features); image_size > 0: images centre-cropped and resized to S x S
      # (0 = as stored, where every image has one size). DeepFashion's configs set their own image_size.
      'image_key': '',
      'label_key': '',
      'image_size': 0,
      # name='image_folder' (your own images, jaxssl/data/image_folder.py; source_dir or $JAXSSL_IMAGE_FOLDER_DIR):
      # prepared once at image_size (0 = 64) by resize 'crop' (shorter side, centre square) or 'squash', with
      # channels 3 or 1, as image_format 'jpeg' (q90) or 'png'; val/test held out of train per class where the
      # folder has no val/ or test/. image_format and prepare_workers are also DeepFashion's.
      'resize': 'crop',
      'channels': 3,
      'val_fraction': 0.1,
      'test_fraction': 0.1,
      'image_format': 'jpeg',
      'prepare_workers': 0,     # threads decoding images at prepare time (0: one per CPU)
  }
  d.update(dataset_keys)
  return ml_collections.ConfigDict(d)


def base_config() -> ml_collections.ConfigDict:
  """Every key jaxssl reads, at its default: Fashion-MNIST, CifarNet, SGD-momentum with a cosine schedule.

  ``tasks`` is empty: every config names its own (check_config rejects a config without one).
  """
  c = ml_collections.ConfigDict()
  c.mode = 'train'
  c.seed = 0

  # source_dir '': $JAXSSL_FASHION_MNIST_DIR, /usr/share/datasets/fashion-mnist, then the official download.
  # pad_to > 28: zero-pad the 28x28 images to this size (32: the LeNet/CIFAR input size).
  c.data = data_config('fashion_mnist', pad_to=0)

  c.model = ml_collections.ConfigDict()
  c.model.name = 'cifarnet'
  c.model.options = ml_collections.ConfigDict({'dropout': 0.0})   # the backbone constructor's keyword arguments
  # 'auto': on a single CPU device oneDNN's convolutions as custom calls (jaxssl/ops/onednn.py; 4-6x faster
  # training than XLA's there, same numbers to float32 rounding), or where oneDNN cannot be built gathered-window
  # (im2col) matmuls (jaxssl/ops/conv.py); XLA's own on GPU/TPU. 'onednn', 'im2col' or 'xla' force one. With
  # oneDNN's convolutions, training BatchNorm (ResNets, AlexNet norm='batch') is oneDNN's too (jaxssl/ops/norm.py).
  c.model.conv_impl = 'auto'

  c.tasks = ml_collections.ConfigDict()

  # Transfer (configs/fmnist_linear.py, fmnist_finetune.py, fmnist_knn.py): the backbone of another run.
  c.init_from = ''             # '' (from scratch) | a workdir | <workdir>/checkpoints/<step>
  c.init_step = -1             # with a workdir: which step (-1 = latest)
  # A backbone array of another shape in init_from (CifarNet trained on jigsaw tiles: fc1 sized for the tile):
  # 'error' stops the run; 'skip' keeps this model's fresh init for those arrays (listed in the log and in
  # init_from.json as not_transferred); the layers' names must still agree.
  c.init_mismatched = 'error'

  c.batch_size = 256
  c.eval_batch_size = 500
  c.num_epochs = 10.0
  c.total_steps = 0            # > 0 overrides num_epochs

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'sgd'
  c.optim.lr = 0.05
  c.optim.momentum = 0.9           # sgd, lars
  c.optim.nesterov = True          # sgd, lars
  c.optim.trust_coefficient = 1e-3  # lars: the layer-wise trust ratio's scale
  c.optim.b1 = 0.9                 # adam, adamw
  c.optim.b2 = 0.999               # adam, adamw
  c.optim.weight_decay = 5e-4
  c.optim.schedule = 'cosine'
  c.optim.warmup_epochs = 0.5
  c.optim.step_size_epochs = 3.0   # schedule='step' only: lr *= gamma every step_size_epochs
  c.optim.gamma = 0.1
  c.optim.grad_clip_norm = 0.0
  c.optim.trainable = 'all'        # 'all' | 'heads' (linear probe) | 'last:K' (last K backbone layers + heads)
  c.optim.backbone_lr_scale = 1.0  # the backbone's lr multiplier (0: frozen for the optimizer)
  # A step with a non-finite loss, gradient norm or update is never applied. 0: the first one stops the run
  # (exit code 3, the last good checkpoints kept); N: up to N such steps over the whole run are skipped.
  c.optim.skip_nonfinite_steps = 0

  # --mode=knn: weighted k-NN on L2-normalized backbone features (Wu et al. 2018's 200-NN protocol).
  c.knn = ml_collections.ConfigDict({'k': 200, 'temperature': 0.07, 'feature': '', 'pool': 'avg',
                                     'batch_size': 500})

  # Multi-label evaluation and --mode=predict (a task of kind 'multitask', configs/deepfashion_multitask.py): the
  # attribute threshold is chosen on threshold_split, report_split is scored at it.
  c.multitask = ml_collections.ConfigDict({
      'threshold_split': 'val', 'threshold_metric': 'mean_sample_f1', 'per_attribute_threshold': False,
      'decision': 'threshold', 'report_split': 'test', 'predict_split': 'test'})

  # The online linear probe and k-NN monitor (jaxssl/tasks/online_probe.py), for any run of a labelled dataset:
  # enabled=True adds the task 'probe', a linear classifier of the labels on stop_gradient(backbone feature) run in
  # inference mode (its gradient never reaches the backbone, BatchNorm statistics untouched), trained beside the
  # run's tasks with its loss x weight; it reports probe/top1 in every log row and evaluation, and with knn the
  # weighted k-NN vote of the eval split among the training features (probe/knn_top1) at every evaluation. Off by
  # default (a dataset without labels cannot have it); the pretext configs turn it on. feature: the backbone layer
  # ('' = its output); pool: how the linear probe flattens a spatial map ('flatten' or 'avg'), knn_pool the k-NN's;
  # norm: > 0 scales each feature vector to this L2 norm first (features change scale as a run trains), 0 = raw;
  # label_key: '' (label, else DeepFashion's category). A backbone built for smaller inputs than the images (the
  # jigsaw's: CifarNet's fc layers fix the size) is fed what it was built for: crop: c > 0 the centred c x c square;
  # tiles: g > 0 the g x g centred jigsaw tiles of every image, their features concatenated (tile_size 0 = the
  # jigsaw's, tile_norm as the jigsaw's). knn_train_limit: > 0 votes among only the first N training records.
  # enable_online_probe(c, ...) below turns it on in a config file.
  c.online_probe = ml_collections.ConfigDict({
      'enabled': False, 'weight': 1.0, 'feature': '', 'pool': 'flatten', 'norm': 32.0, 'label_key': '',
      'crop': 0, 'tiles': 0, 'tile_size': 0, 'tile_norm': True,
      'knn': True, 'knn_k': 200, 'knn_temperature': 0.07, 'knn_pool': 'avg', 'knn_train_limit': 0})

  # Evaluators beyond those every run has (jaxssl/eval/base.py): name -> options, set in a config file
  # (c.evals.knn = {...}); empty: each run's defaults.
  c.evals = ml_collections.ConfigDict()

  c.log_every = 50
  c.eval_every = 470           # ~2 epochs of Fashion-MNIST at batch 256
  c.checkpoint_every = 470
  c.keep_checkpoints = 3
  c.eval_step = -1             # --mode=eval: which checkpoint (-1 = latest)
  # A training run holds <workdir>/lock.json; one left by a run on another host is taken over after this many
  # seconds without a heartbeat (on the same host, as soon as its process is gone).
  c.lock_timeout_s = 600.0
  return c


def classify_task(**options: Any) -> ml_collections.ConfigDict:
  """Options of the supervised classification task (crop, flip; the layer and pooling a probe reads)."""
  return ml_collections.ConfigDict({'crop_padding': 2, 'flip': True, 'feature': '', 'freeze_backbone': False,
                                    'pool': 'flatten', **options})


# ------------------------------------------------------------------------------------------- recipes


def make_quick(c: ml_collections.ConfigDict, *, train_limit: int, eval_limit: int, batch_size: int,
               total_steps: int, eval_every: int) -> ml_collections.ConfigDict:
  """The ':quick' variant: a few minutes on a slice of the data, no warmup."""
  c.data.train_limit, c.data.eval_limit = train_limit, eval_limit
  c.batch_size, c.total_steps = batch_size, total_steps
  c.optim.warmup_epochs = 0.0
  c.eval_every = c.checkpoint_every = eval_every
  c.log_every = 10
  return c


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


def two_view_config(model: str, quick: bool) -> ml_collections.ConfigDict:
  """What the Fashion-MNIST SimCLR and BYOL configs share: ``model`` (cifarnet or resnet18_cifar), 100 epochs of
  256 images, evaluated every 10 epochs with a k-NN monitor of the representation; ``quick``: 150 steps of 64
  images (ResNet-18: 60 of 32). The config adds its task, then its optimizer (which scales with the batch)."""
  c = base_config()
  c.model.name = model
  c.model.options = ml_collections.ConfigDict({'dropout': 0.0} if model == 'cifarnet' else {'width': 1.0})
  c.batch_size, c.num_epochs, c.eval_batch_size = 256, 100.0, 250
  c.eval_every = c.checkpoint_every = 2340
  c.evals.knn = ml_collections.ConfigDict({'at': ('eval', 'final'), 'feature': ''})
  if quick:
    heavy = model != 'cifarnet'
    make_quick(c, train_limit=6400, eval_limit=1000, batch_size=32 if heavy else 64,
               total_steps=60 if heavy else 150, eval_every=60 if heavy else 50)
  return c


def set_lars(c: ml_collections.ConfigDict, *, lr: float, scaling: str, weight_decay: float,
             warmup_epochs: float = 10.0) -> ml_collections.ConfigDict:
  """The large-batch recipe of SimCLR and BYOL: LARS (momentum 0.9) at ``lr`` x batch_size / 256 (``scaling``
  'linear') or ``lr`` x sqrt(batch_size) ('sqrt', SimCLR's choice for small batches), linear warmup, then cosine.
  Set ``c.batch_size`` first."""
  c.optim.name, c.optim.schedule = 'lars', 'cosine'
  c.optim.lr = lr * (c.batch_size / 256 if scaling == 'linear' else c.batch_size ** 0.5)
  c.optim.momentum, c.optim.nesterov = 0.9, False
  c.optim.weight_decay, c.optim.warmup_epochs = weight_decay, warmup_epochs
  return c


def enable_online_probe(c: ml_collections.ConfigDict, **options: Any) -> ml_collections.ConfigDict:
  """Turns on the online linear probe and k-NN monitor (``c.online_probe``, see base_config) with ``options``
  (feature, pool, tiles, ...); ``--config.online_probe.enabled=false`` turns it off again."""
  c.online_probe.enabled = True
  c.online_probe.update(options)
  return c


def set_finetune(c: ml_collections.ConfigDict, trainable: str) -> ml_collections.ConfigDict:
  """Fine-tuning from another run's backbone: ``all`` layers with the backbone at a tenth of the head's lr (it
  starts from features worth keeping), or ``last:K`` backbone layers at the full lr, the rest frozen."""
  if trainable == 'all':
    c.optim.trainable, c.optim.backbone_lr_scale = 'all', 0.1
  elif trainable.startswith('last:'):
    c.optim.trainable, c.optim.backbone_lr_scale = trainable, 1.0   # K is checked with the rest of the config
  else:
    raise ValueError(f"unknown config argument '{trainable}'; it knows: all, last:K")
  return c


# ------------------------------------------------------------------------------------------- arguments


class Choice(tuple):
  """An argument that is one of these words, ``default`` (else the first) by default; given bare (``:sample``)
  or as ``key=word``."""

  def __new__(cls, *words: str, default: str | None = None):
    if not words or (default is not None and default not in words):
      raise ValueError(f'a Choice needs words and a default among them, not {words}, default={default!r}')
    choice = super().__new__(cls, words)
    choice.default = words[0] if default is None else default
    return choice


class Word(str):
  """An argument that is any word, this one by default; given as ``key=word``, or bare when the word names
  nothing else the config knows (a layer name: a config cannot list every backbone's)."""


_TRUE, _FALSE = ('true', 'yes', 'on', '1'), ('false', 'no', 'off', '0')


def _typed(key: str, default: Any, text: str, token: str) -> Any:
  """``text`` as the type of ``default``: the one place a config argument's spelling is checked."""
  def bad(what):
    return ValueError(f"config argument '{token}': {key} takes {what}")

  if isinstance(default, Choice):
    if text not in default:
      raise bad(f"one of {', '.join(default)}")
    return text
  if isinstance(default, bool):   # before int: bool is an int
    if text.lower() not in _TRUE + _FALSE:
      raise bad('true or false')
    return text.lower() in _TRUE
  for kind, what in ((int, 'an integer'), (float, 'a number')):
    if isinstance(default, kind):
      try:
        return kind(text)
      except ValueError:
        raise bad(what) from None
  if not text:
    raise bad('a word')
  return text


def _bare_words(spec: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
  """Which argument each bare word sets, and the Word argument that takes any other; a word two arguments
  could claim is refused when the config is written rather than guessed when it is used."""
  by_word = {}
  for key, default in spec.items():
    for word in (default if isinstance(default, Choice) else ()):
      if word in by_word or (word in spec and word != key):
        raise ValueError(f"config argument word '{word}' is ambiguous in this config's arguments")
      by_word[word] = key
  free = [k for k, v in spec.items() if isinstance(v, Word)]
  if len(free) > 1:
    raise ValueError(f'a config can take at most one Word argument, not {free}')
  return by_word, free


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
  """A config's ``:arg``, ``token[,token...]``, as a ConfigDict holding every key of ``spec``.

  ``spec`` maps each argument the config knows to its default; the default's type is the argument's type:
  bool, int, float, str, :class:`Choice` or :class:`Word`. A token is ``key=value`` (any argument), or a bare
  word: a bool's name (sets it true), a word of a Choice (sets that choice), else a value for the config's Word
  argument. ``'sample,quick'`` and ``'variant=sample,quick=true'`` mean the same. Anything else is one line
  naming what the config knows.
  """
  by_word, free = _bare_words(spec)

  def unknown(token):
    bare = [w for k, v in spec.items() for w in (v if isinstance(v, Choice) else (k,) if isinstance(v, bool)
                                                 else (f'{k.upper()} (any word)',) if isinstance(v, Word) else ())]
    keys = f"key=value, key one of: {', '.join(spec)}"
    knows = (f"{', '.join(bare)} (or {keys})" if bare else keys) if spec else 'no arguments'
    where = f" in '{arg}'" if token != arg else ''
    return ValueError(f"unknown config argument '{token}'{where}; it knows: {knows}")

  values = {k: (v.default if isinstance(v, Choice) else str(v) if isinstance(v, Word) else v) for k, v in spec.items()}
  given = set()
  for token in (t.strip() for t in (arg or '').split(',')):
    if not token:
      continue
    key, eq, text = token.partition('=')
    if eq:
      if key not in spec:
        raise unknown(token)
      value = _typed(key, spec[key], text, token)
    elif isinstance(spec.get(token), bool):
      key, value = token, True
    elif token in by_word:
      key, value = by_word[token], token
    elif free:
      # Any word is the Word argument's value (a layer name), but one a letter or two from a word the config
      # knows is a typo of it, not a layer: said now, not when the backbone is built.
      near = difflib.get_close_matches(token, [*by_word, *(k for k, v in spec.items() if isinstance(v, bool))], n=1,
                                       cutoff=0.8)
      if near:
        raise ValueError(f"{unknown(token)} (did you mean '{near[0]}'? another word is taken as {free[0]})")
      key, value = free[0], token
    else:
      raise unknown(token)
    if key in given:
      raise ValueError(f"config argument '{arg}' sets {key} twice")
    given.add(key)
    values[key] = value
  return ml_collections.ConfigDict(values)
