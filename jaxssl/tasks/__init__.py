"""Every task, and how several share one backbone. ``config.tasks`` maps a task name to its options; ``kind``
(default: the name) picks the class, ``weight`` (default 1) its share of the total loss, and every other key is
passed to the class.

A kind is a name in :data:`TASKS` or a ``'module:Class'`` path (a task defined outside jaxssl). Adding a task to
jaxssl is one file in this folder and one line in :data:`TASKS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import ml_collections

from jaxssl import registry
from jaxssl.tasks.base import Task, as_pair

# kind -> 'module:Class'; imported lazily so a config error is reported before anything heavy loads.
TASKS: dict[str, str] = {
    'classify': 'jaxssl.tasks.classification:Classification',
    'rotation': 'jaxssl.tasks.rotation:Rotation',
    'jigsaw': 'jaxssl.tasks.jigsaw:JigsawPermutation',
    'jigsaw_coords': 'jaxssl.tasks.jigsaw:JigsawCoords',
    # Dense pretext tasks with a decoder head (issue 16).
    'autoencoder': 'jaxssl.tasks.autoencoder:Autoencoder',
    'inpainting': 'jaxssl.tasks.inpainting:Inpainting',
    'colorization': 'jaxssl.tasks.colorization:Colorization',
    'patch_location': 'jaxssl.tasks.patch_location:PatchLocation',
    # DeepFashion: a softmax category and sigmoid attributes from one backbone feature. 'multitask' is its
    # earlier name, kept so that existing configs and workdirs keep working.
    'category_attributes': 'jaxssl.tasks.category_attributes:CategoryAttributes',
    'multitask': 'jaxssl.tasks.category_attributes:CategoryAttributes',
    # Instance discrimination from two views of every image (jaxssl/data/views.py).
    'simclr': 'jaxssl.tasks.contrastive:SimCLR',
    'byol': 'jaxssl.tasks.byol:BYOL',
    # Exemplar CNN: N seed images, each a class under random transformations (issue 17).
    'exemplar': 'jaxssl.tasks.exemplar:Exemplar',
    # The online linear probe; config.online_probe adds it to any run as the task 'probe' (see with_online_probe).
    'online_probe': 'jaxssl.tasks.online_probe:OnlineProbe',
}


def task_class(kind: str) -> type[Task]:
  """The task class of ``kind`` (a name in :data:`TASKS` or a ``'module:Class'`` path)."""
  found = registry.lookup(kind, TASKS, 'task kind')
  if not (isinstance(found, type) and issubclass(found, Task) and dataclasses.is_dataclass(found)):
    raise ValueError(f"task kind '{kind}': {TASKS.get(kind, kind)} is not a dataclass subclass of "
                     'jaxssl.tasks.base.Task')
  return found


def _options(cls) -> set[str]:
  return {f.name for f in dataclasses.fields(cls)}


# Stand-ins for what a task takes from the dataset, so that the config check can build every task (its
# __post_init__ checks its option values: rotation angles, pool, crop, ...) before any data is prepared. The real
# values replace them in build_tasks; a check that needs them (a dataset without attributes) runs there.
_PLACEHOLDER_DATASET = {'num_classes': 2, 'mean': 0.0, 'std': 1.0, 'num_attributes': 1, 'attribute_frequency': ()}


def _make(name: str, cfg, from_dataset: Mapping) -> Task:
  """One task from its config options and what it takes from the dataset; a bad option value is one line."""
  cls = task_class(cfg.get('kind', name))
  fields = _options(cls)
  options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k not in ('kind', 'weight')}
  options.update({k: v for k, v in from_dataset.items() if k in fields and k in cls.FROM_DATASET})
  try:
    return cls(name=name, **options)
  except (TypeError, ValueError) as e:  # a value of the wrong type or range, from the class's __post_init__
    message = ' '.join(str(e).split()) or type(e).__name__
    if message.startswith(f"task '{name}'"):
      raise ValueError(message) from e
    raise ValueError(f"task '{name}' ({cls.__name__}): {message}") from e


PROBE = 'probe'   # the name of the task config.online_probe adds


def with_online_probe(tasks_cfg, online_probe=None) -> list[tuple[str, Mapping]]:
  """``(name, options)`` of every task of a run: ``config.tasks``, then, where ``config.online_probe.enabled``,
  the online probe (jaxssl/tasks/online_probe.py) as the task ``probe``, last (it changes no other task's draws),
  with the switch's other keys as its options."""
  entries = list(tasks_cfg.items())
  if online_probe is None or not online_probe.get('enabled', False):
    return entries
  if PROBE in tasks_cfg:
    raise ValueError(f"config.online_probe.enabled adds a task named '{PROBE}', but config.tasks already has one: "
                     'rename that task or set --config.online_probe.enabled=false')
  options = {k: v for k, v in online_probe.items() if k != 'enabled'}
  return entries + [(PROBE, {'kind': 'online_probe', **options})]


def check_tasks(tasks_cfg: ml_collections.ConfigDict, online_probe=None, batch_size: int | None = None) -> None:
  """Rejects an unknown kind or option, or a bad option value, with one message, before any data or model is
  built. ``online_probe``: the config's switch (``config.online_probe``), checked as the task it adds;
  ``batch_size``: the global batch, at least each task's ``min_batch``."""
  if not tasks_cfg:
    raise ValueError('config.tasks is empty: name at least one task, e.g. tasks.classify = {}')
  for name, cfg in with_online_probe(tasks_cfg, online_probe):
    cls = task_class(cfg.get('kind', name))
    fields = _options(cls)
    unknown = set(cfg.keys()) - fields - {'kind', 'weight'}
    if unknown:
      raise ValueError(f"task '{name}' ({cls.__name__}) has no option(s) {sorted(unknown)}; "
                       f"its options are: {sorted(fields - set(cls.FROM_DATASET) - {'name'})}")
    bad = registry.option_type_errors(cls, {k: v for k, v in cfg.items() if k not in ('kind', 'weight')})
    if bad:
      raise ValueError(f"task '{name}' ({cls.__name__}): {'; '.join(bad)} (set --config.tasks.{name}.<option>)")
    if batch_size is not None and batch_size < cls.min_batch:
      raise ValueError(f"--config.batch_size={batch_size}: task '{name}' ({cls.__name__}) needs a batch of at "
                       f'least {cls.min_batch} images')
    weight = cfg.get('weight', 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
      raise ValueError(f"task '{name}': weight={weight!r} must be a number >= 0 (set --config.tasks.{name}.weight)")
    _make(name, cfg, _PLACEHOLDER_DATASET)


def build_tasks(tasks_cfg: ml_collections.ConfigDict, info, online_probe=None,
                train_source=None) -> tuple[list[Task], dict[str, float]]:
  """The tasks of a config, with what they take from the dataset (classes, pixel statistics, attributes, and,
  for a task that declares it in ``FROM_DATASET``, the run's ``train_source``: the exemplar task's images), plus
  the online probe where ``online_probe`` (``config.online_probe``) enables it."""
  check_tasks(tasks_cfg, online_probe)
  from_dataset = {'num_classes': info.num_classes, 'mean': info.mean, 'std': info.std,
                  'num_attributes': len(info.attribute_names), 'attribute_frequency': info.attribute_frequency}
  if train_source is not None:
    from_dataset['train_source'] = train_source
  entries = with_online_probe(tasks_cfg, online_probe)
  tasks = [_make(name, cfg, from_dataset) for name, cfg in entries]
  weights = {name: float(cfg.get('weight', 1.0)) for name, cfg in entries}
  return tasks, weights


def task_losses(model, tasks: Sequence[Task], weights: Mapping[str, float], batch, *, train: bool, rng):
  """The weighted sum of every task's loss on one shared backbone, and each task's metrics as ``(total, count)``
  pairs named ``<task>/<metric>`` (see jaxssl/tasks/base.py)."""
  total, metrics = 0.0, {}
  for i, task in enumerate(tasks):
    task_rng = None if rng is None else jax.random.fold_in(rng, i)
    outputs = task.forward(model.backbone, model.heads[task.name], batch[task.name], train=train, rng=task_rng)
    loss, task_metrics = task.loss(outputs, batch[task.name])
    total = total + weights[task.name] * loss
    count = batch[task.name]['weight'].sum()
    metrics.update({f'{task.name}/{k}': as_pair(v, count) for k, v in task_metrics.items()})
  return total, metrics
