"""Starting a model from another run's backbone (``config.init_from``), and which of its layers train.

The source checkpoint's ``state`` item is read from its own metadata (no target model needed, so a pretext
run's checkpoint loads into a classifier), and only the ``backbone`` subtrees of ``params`` and
``model_state`` are taken: a pretext head has nothing to do with the downstream task.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from jaxssl import files, trees
from jaxssl.models import torchvision_weights
from jaxssl.runlog import write_json
from jaxssl.train.checkpoint import state_metadata

BACKBONE = 'backbone'
# Normalization layers join the layer called just before them: a conv and its BatchNorm train together.
_NORMS = (nnx.BatchNorm, nnx.LayerNorm, nnx.GroupNorm, nnx.RMSNorm)


class TransferError(ValueError):
  """A backbone cannot be carried from one run into another: the message names both sides and the fix."""


def resolve_checkpoint(init_from: str, init_step: int = -1) -> str:
  """A workdir, a ``checkpoints/`` folder or one ``checkpoints/<step>`` folder -> that step's folder."""
  path = files.abspath(init_from if files.is_remote(init_from) else os.path.expanduser(init_from))
  if files.isdir(files.join(path, 'state')):
    if init_step >= 0 and files.basename(path) != str(init_step):
      raise TransferError(f'init_from={init_from} is the checkpoint of step {files.basename(path)}, but '
                       f'init_step={init_step}; give the workdir instead, or init_step=-1')
    return path
  parent = files.dirname(path)
  if files.basename(parent) == 'checkpoints' and not files.isdir(path):   # <run>/checkpoints/<a step it lacks>
    steps = sorted(int(d) for d in files.listdir(parent) if d.isdigit()) if files.isdir(parent) else []
    raise FileNotFoundError(f'init_from={init_from}: no such checkpoint; {parent} holds the steps {steps or "none"}')
  ckpt_dir = path if files.basename(path) == 'checkpoints' else files.join(path, 'checkpoints')
  steps = sorted(int(d) for d in files.listdir(ckpt_dir) if d.isdigit()) if files.isdir(ckpt_dir) else []
  # Only finished saves: orbax writes into a temporary folder and renames it when committed.
  steps = [s for s in steps if files.isdir(files.join(ckpt_dir, str(s), 'state'))]
  if not steps:
    raise FileNotFoundError(f'init_from={init_from}: no checkpoint in {ckpt_dir}; point --config.init_from at a '
                            'trained workdir or one of its checkpoints/<step> folders')
  step = steps[-1] if init_step < 0 else init_step
  if step not in steps:
    raise FileNotFoundError(f'init_from={init_from}: no checkpoint at step {step} in {ckpt_dir}; '
                            f'available steps: {steps}')
  return files.join(ckpt_dir, str(step))


def read_backbone(checkpoint: str) -> dict[tuple[str, ...], np.ndarray]:
  """The backbone's arrays (parameters and BatchNorm statistics) of one checkpoint step folder, by path
  below ``backbone``."""
  state_dir = files.join(checkpoint, 'state')
  if not files.isdir(state_dir):
    raise FileNotFoundError(f'no train state in {checkpoint} (expected {state_dir})')
  tree = state_metadata(state_dir)
  wanted = {part: {BACKBONE: tree[part][BACKBONE]} for part in ('params', 'model_state')
            if isinstance(tree, dict) and isinstance(tree.get(part), dict) and BACKBONE in tree[part]}
  if 'params' not in wanted:
    raise TransferError(f'the checkpoint {checkpoint} has no params/{BACKBONE} subtree (top-level items: '
                     f'{sorted(tree) if isinstance(tree, dict) else type(tree).__name__}); it is not a jaxssl run')
  # Restored whole onto this host's first device, whatever mesh saved it; the caller replicates it.
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding), wanted)
  restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=sharding), abstract)
  with ocp.PyTreeCheckpointer() as ckptr:  # partial: the optimizer state and heads are not read
    restored = ckptr.restore(state_dir, args=ocp.args.PyTreeRestore(abstract, restore_args, partial_restore=True))
  out = {}
  for part in restored:
    out.update(trees.flat_paths(restored[part][BACKBONE]))
  return {k: np.asarray(v) for k, v in out.items()}


MISMATCHED = ('error', 'skip')


def load_backbone(model, checkpoint: str, mismatched: str = 'error') -> dict[str, Any]:
  """Copies the backbone of ``checkpoint`` into ``model.backbone`` in place; returns what was loaded.

  Every backbone array of the model must be in the checkpoint, and nothing else may be there: anything else
  means a different architecture, reported with both sides. An array of another shape (the source was built for
  another input size) stops it too, or with ``mismatched='skip'`` keeps the model's own init: those paths are
  returned as ``not_transferred``.
  """
  source = read_backbone(checkpoint)
  state = nnx.state(model.backbone)
  target = trees.flat_paths(state)
  where = f'checkpoint {checkpoint} vs. the model built from this config'
  missing = sorted(set(target) - set(source))
  extra = sorted(set(source) - set(target))
  if missing or extra:
    raise TransferError(f'backbone mismatch ({where}): missing in the checkpoint: '
                     f'{["/".join(p) for p in missing[:5]]}{" ..." if len(missing) > 5 else ""}; only in the '
                     f'checkpoint: {["/".join(p) for p in extra[:5]]}{" ..." if len(extra) > 5 else ""}. '
                     'Use the same --config.model.name and model.options as the source run.')
  skipped = []
  for path, leaf in target.items():
    if tuple(source[path].shape) != tuple(leaf.shape) or source[path].dtype != leaf.dtype:
      if mismatched == 'skip':
        skipped.append(path)
        continue
      raise TransferError(
          f'backbone shape mismatch at {BACKBONE}/{"/".join(path)}: {tuple(source[path].shape)} '
          f'{source[path].dtype} in the checkpoint {checkpoint}, {tuple(leaf.shape)} {leaf.dtype} in the model '
          'built from this config. The source backbone was built for other inputs or options (e.g. CifarNet on '
          'jigsaw tiles has fc1 sized for the tile, not the image): use a backbone that takes any size '
          '(resnet20, ...), the same input size and model options, or --config.init_mismatched=skip to keep '
          'the fresh init of such arrays.')
  leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
  new = [leaf if trees.path_keys(p) in skipped else jax.numpy.asarray(source[trees.path_keys(p)])
         for p, leaf in leaves]
  nnx.update(model.backbone, jax.tree_util.tree_unflatten(treedef, new))
  copied = {k: v for k, v in source.items() if k not in skipped}
  info = {'checkpoint': checkpoint, 'step': int(os.path.basename(checkpoint)) if os.path.basename(
      checkpoint).isdigit() else None, 'arrays': len(copied), 'parameters': int(sum(v.size for v in copied.values()))}
  if skipped:
    info['not_transferred'] = ['/'.join(p) for p in skipped]
  return info


def load_init(model, init_from: str, init_step: int = -1, mismatched: str = 'error') -> dict[str, Any]:
  """``config.init_from`` into ``model.backbone``: a torchvision-format weights file (.safetensors, .pth, .pt;
  jaxssl/models/torchvision_weights.py) or a jaxssl run's checkpoint (:func:`load_backbone`)."""
  if not torchvision_weights.is_weights_file(init_from):
    return load_backbone(model, resolve_checkpoint(init_from, init_step), mismatched)
  try:
    torchvision_weights.check_weights_file(init_from, init_step)
    return torchvision_weights.load_weights(model.backbone, init_from)[0]
  except torchvision_weights.WeightsError as e:
    raise TransferError(str(e)) from None


def write_init_info(workdir: str, info: dict[str, Any]) -> None:
  if jax.process_index():
    return
  write_json(files.join(workdir, 'init_from.json'), info)


def has_checkpoint(workdir: str) -> bool:
  ckpt_dir = files.join(workdir, 'checkpoints')
  return files.isdir(ckpt_dir) and any(
      d.isdigit() and files.isdir(files.join(ckpt_dir, d)) for d in files.listdir(ckpt_dir))


# ---- Layer order, for 'last:K' fine-tuning.

def backbone_layers(backbone, input_shape) -> list[tuple[tuple[str, ...], ...]]:
  """Module paths (below ``backbone``) of the backbone's parameterized layers, one group per layer, in the
  order the forward calls them.

  Traced abstractly (no FLOPs; the backbone may itself be abstract, from nnx.eval_shape) by recording the calls
  of every module that owns parameters directly; a normalization layer joins the layer called before it.
  Attribute or graph order would be alphabetical ('stages' before 'stem_conv') or depend on how
  ``__init__`` was written.
  """
  graphdef, state = nnx.split(backbone)
  calls: list[tuple[str, ...]] = []
  norms: set[tuple[str, ...]] = set()

  def forward(state, x):
    model = nnx.merge(graphdef, state)
    owners = {id(m): tuple(str(p) for p in path) for path, m in nnx.iter_modules(model)
              if any(isinstance(v, nnx.Param) for v in vars(m).values())}
    norms.update(owners[id(m)] for _, m in nnx.iter_modules(model) if id(m) in owners and isinstance(m, _NORMS))
    originals = {type(m): type(m).__call__ for _, m in nnx.iter_modules(model) if id(m) in owners}

    def recorder(original):
      def call(self, *args, **kwargs):
        if id(self) in owners and owners[id(self)] not in calls:
          calls.append(owners[id(self)])
        return original(self, *args, **kwargs)
      return call

    try:
      for cls, original in originals.items():
        cls.__call__ = recorder(original)
      return model(x, train=False)
    finally:
      for cls, original in originals.items():
        cls.__call__ = original

  jax.eval_shape(forward, state, jax.ShapeDtypeStruct((1, *input_shape), np.float32))
  layers: list[list[tuple[str, ...]]] = []
  for path in calls:
    if path in norms and layers:
      layers[-1].append(path)
    else:
      layers.append([path])
  return [tuple(group) for group in layers]


def check_frozen_tasks(optim_cfg, tasks) -> None:
  """A linear probe (trainable='heads') must also run its backbone frozen: otherwise BatchNorm statistics
  would still move and a backward pass through the backbone would be spent for nothing."""
  if optim_cfg.trainable != 'heads':
    # The converse: no task trains the backbone, yet the optimizer would still move it (weight decay).
    if all(t.freeze_backbone for t in tasks) and optim_cfg.backbone_lr_scale > 0:
      raise TransferError("every task runs the backbone frozen (freeze_backbone=True), but the optimizer would still "
                       "update it (weight decay): set --config.optim.trainable=heads")
    return
  loose = [t.name for t in tasks if not t.freeze_backbone]
  if loose:
    raise TransferError(f"optim.trainable='heads' freezes the backbone, but task(s) {loose} do not run it frozen: "
                     + ', '.join(f'set --config.tasks.{n}.freeze_backbone=True' for n in loose)
                     + ' (only tasks with a freeze_backbone option, e.g. classify, can be probes)')
