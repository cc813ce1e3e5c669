r"""ResNet-18 (CIFAR stem) rotation pretraining step on a GPU: jaxssl (XLA) against PyTorch eager on the same GPU.

GPU machines without jaxssl's data stack (grain, the dataset files) are common; so the batch is made first, by
jaxssl's own pipeline on real Fashion-MNIST (padded to 32x32x1, four rotations per image), wherever the data are:

  python -m jaxssl.bench.gpu --make_batch=/tmp/gpu_batch            # writes batch.npz and info.json

and the step is timed on the GPU machine, which needs only jax (with its CUDA plugin), flax, optax, ml_collections
and, for the comparison, torch with CUDA:

  python -m jaxssl.bench.gpu --batch_dir=/tmp/gpu_batch [--dtypes=bfloat16,float32] [--repeat=4] [--notorch]

Each dtype: jaxssl's train step (flax ``dtype``: bf16 activations, float32 parameters; float32 runs XLA's
default precision, TF32 on the tensor cores) and PyTorch's twin (``torch_twin.make_step`` on the GPU:
channels_last, SGD, ``torch.autocast('cuda', torch.bfloat16)`` for bf16; cuDNN benchmark mode with
--cudnn_benchmark), each framework's steps timed alone, one sync per step; one JSON line per dtype, and ``--json``
writes them all.
``--repeat`` tiles the batch (256 x repeat source images per step).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
import types

from absl import flags

from jaxssl import cli
from jaxssl.bench import common


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> types.SimpleNamespace:
  """The command's flags, defined when it runs (not at import: the other benches and jaxssl.main define some of
  the same names, and tests import them all in one process)."""
  fv = flag_values
  return types.SimpleNamespace(
      make_batch=flags.DEFINE_string('make_batch', '', 'Write a rotation batch (and the dataset facts) to this '
                                     'folder.', flag_values=fv),
      batch_dir=flags.DEFINE_string('batch_dir', '', 'Time the step on the batch in this folder (made by '
                                    '--make_batch).', flag_values=fv),
      source_batch=flags.DEFINE_integer('source_batch', 256, 'Source images in the batch --make_batch writes.',
                                        flag_values=fv),
      dtypes=flags.DEFINE_list('dtypes', ['bfloat16', 'float32'], 'Compute dtypes to time.', flag_values=fv),
      repeat=flags.DEFINE_integer('repeat', 1, 'Tile the batch this many times.', flag_values=fv),
      timed_steps=flags.DEFINE_integer('timed_steps', 30, 'Timed steps per framework and dtype.', lower_bound=1,
                                       flag_values=fv),
      warmup_steps=flags.DEFINE_integer('warmup_steps', 5, 'Untimed steps first.', flag_values=fv),
      cudnn_benchmark=flags.DEFINE_bool('cudnn_benchmark', True, "PyTorch's torch.backends.cudnn.benchmark.",
                                        flag_values=fv),
      json=flags.DEFINE_string('json', '', 'Also write the rows to this JSON file.', flag_values=fv),
      torch=flags.DEFINE_bool('torch', True, "Also time PyTorch's twin of the step (needs torch with CUDA).",
                              flag_values=fv))


def _config(dtype: str, batch_size: int):
  from configs import fmnist_rotation  # pylint: disable=import-outside-toplevel
  cfg = fmnist_rotation.get_config()
  with cfg.unlocked():
    cfg.model.name = 'resnet18_cifar'
    cfg.model.options = {'dtype': dtype}
    cfg.batch_size = batch_size
    cfg.data.pad_to = 32
  return cfg


def make_batch(folder: str, source_batch: int, data_dir: str = '') -> None:
  """Writes one rotation batch of ``source_batch`` images, drawn by jaxssl's pipeline from the Fashion-MNIST
  prepared in ``data_dir`` ('': the config's default, $TFDS_DATA_DIR or ~/tensorflow_datasets), and the dataset's
  facts."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jaxssl.data import pipeline  # pylint: disable=import-outside-toplevel
  from jaxssl.data.datasets import get_dataset, load_split  # pylint: disable=import-outside-toplevel
  from jaxssl.tasks import build_tasks  # pylint: disable=import-outside-toplevel
  cfg = _config('float32', source_batch)
  if data_dir:
    cfg.data.data_dir = data_dir
  info = get_dataset(cfg.data.name, cfg.data)
  tasks, _ = build_tasks(cfg.tasks, info)
  source = load_split(info, cfg.data.train_split, cfg.data, 0)
  it = pipeline.train_iterator(source, tasks, global_batch=source_batch, seed=0, **pipeline.iterator_options(cfg.data))
  try:
    batch = next(it)
  finally:  # grain's workers and their shared memory end here, not at exit
    getattr(it, 'close', lambda: None)()
  os.makedirs(folder, exist_ok=True)
  flat = {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(batch)[0]}
  np.savez(os.path.join(folder, 'batch.npz'), **flat)
  with open(os.path.join(folder, 'info.json'), 'w', encoding='utf-8') as f:
    json.dump({x.name: getattr(info, x.name) for x in dataclasses.fields(info) if x.name != 'load'}, f)


def _load_batch(folder: str, repeat: int):
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jaxssl.data.datasets import DatasetInfo  # pylint: disable=import-outside-toplevel
  batch: dict = {}
  for key, value in np.load(os.path.join(folder, 'batch.npz')).items():
    *outer, leaf = key.split('/')
    node = batch
    for part in outer:
      node = node.setdefault(part, {})
    node[leaf] = np.concatenate([value] * repeat)
  with open(os.path.join(folder, 'info.json'), encoding='utf-8') as f:
    fields = json.load(f)
  info = DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}, load=None)
  return batch, info


def jax_times(dtype: str, batch_np, info, *, steps: int, warmup: int) -> tuple[list[float], float]:
  """(seconds of each timed step, compile seconds) of jaxssl's train step in ``dtype`` on ``batch_np``, built
  from the model, optimizer and step functions directly: the GPU machine needs no dataset to build it."""
  import jax  # pylint: disable=import-outside-toplevel
  from jaxssl.tasks import build_tasks  # pylint: disable=import-outside-toplevel
  from jaxssl import sharding as mesh_lib  # pylint: disable=import-outside-toplevel
  from jaxssl.train import optim, step as step_lib  # pylint: disable=import-outside-toplevel
  from jaxssl.train.state import build_model, init_train_state  # pylint: disable=import-outside-toplevel
  source_batch = len(jax.tree.leaves(batch_np)[0])
  cfg = _config(dtype, source_batch)
  tasks, weights = build_tasks(cfg.tasks, info)
  model = build_model(cfg.model, info.input_shape, tasks, cfg.seed)
  tx, schedule = optim.make_optimizer(cfg.optim, 10_000, 100)
  graphdef, state = init_train_state(model, tx)
  mesh = mesh_lib.make_mesh()
  replicated = mesh_lib.replicated(mesh)
  state = jax.device_put(state, replicated)
  train_step = step_lib.jit_train_step(step_lib.make_train_step(graphdef, tx, schedule, tasks, weights),
                                       replicated, mesh_lib.batch_sharding(mesh), replicated)
  batch = mesh_lib.shard_batch(batch_np, mesh)
  rng = jax.random.PRNGKey(0)
  t0 = time.perf_counter()
  compiled = train_step.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - t0
  carry = {'state': state}

  def step():
    carry['state'], metrics = compiled(carry['state'], batch, rng)
    jax.block_until_ready(metrics)

  return common.step_times(step, steps, warmup), compile_s


def torch_times(dtype: str, source_batch: int, *, steps: int, warmup: int,
                cudnn_benchmark: bool) -> tuple[list, dict]:
  """(seconds of each timed step, versions) of PyTorch's twin of the step on CUDA, on a batch of its own of the
  same shape (random images: the step's cost does not depend on the pixels)."""
  import torch  # pylint: disable=import-outside-toplevel
  from jaxssl.bench import torch_twin  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  torch.backends.cudnn.benchmark = cudnn_benchmark
  step = torch_twin.make_step('resnet18_cifar', 'rotation', source_batch, (32, 32, 1), dtype=dtype, device='cuda')
  return common.step_times(step, steps, warmup), {'torch': torch.__version__, 'cudnn': torch.backends.cudnn.version()}


def main(argv, *, opts: types.SimpleNamespace):
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])} (flags are --name=value; --help lists them)')
  if bool(opts.make_batch.value) == bool(opts.batch_dir.value):
    cli.fail('give one of --make_batch=FOLDER (on a machine with the data) or --batch_dir=FOLDER')
  if opts.make_batch.value:
    make_batch(opts.make_batch.value, opts.source_batch.value)
    print(f'wrote {opts.make_batch.value}/batch.npz and info.json; time it with --batch_dir={opts.make_batch.value}')
    return
  import jax  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(os.path.join(opts.batch_dir.value, 'batch.npz')):
    cli.fail(f'--batch_dir={opts.batch_dir.value} holds no batch.npz: make one with --make_batch=FOLDER (on a '
             'machine with the data) and copy that folder here')
  batch_np, info = _load_batch(opts.batch_dir.value, opts.repeat.value)
  source = len(jax.tree.leaves(batch_np)[0])
  images = sum(x.size for x in jax.tree.leaves(batch_np) if x.ndim >= 4) // (32 * 32)
  steps, warmup, cudnn_benchmark = opts.timed_steps.value, opts.warmup_steps.value, opts.cudnn_benchmark.value
  rows = []
  for dtype in opts.dtypes.value:
    jt, compile_s = jax_times(dtype, batch_np, info, steps=steps, warmup=warmup)
    row = {'device': jax.devices()[0].device_kind, 'jax': jax.__version__, 'dtype': dtype, 'source_batch': source,
           'images_per_step': images, 'jax_compile_s': round(compile_s, 1),
           'jax_step_ms_median': round(1e3 * statistics.median(jt), 2),
           'jax_images_per_s': round(source / statistics.median(jt), 1)}
    if opts.torch.value:
      tt, versions = torch_times(dtype, source, steps=steps, warmup=warmup, cudnn_benchmark=cudnn_benchmark)
      row.update({**versions, 'cudnn_benchmark': cudnn_benchmark,
                  'torch_step_ms_median': round(1e3 * statistics.median(tt), 2),
                  'torch_images_per_s': round(source / statistics.median(tt), 1),
                  'jax_over_torch': round(statistics.median(tt) / statistics.median(jt), 3)})
    rows.append(row)
    print(json.dumps(row), flush=True)
  common.write_json(opts.json.value, rows)



if __name__ == '__main__':
  cli.run(define_flags, main)
