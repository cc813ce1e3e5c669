"""Tasks by kind. ``config.tasks`` maps a task name to its options; ``kind`` (default: the name) picks the
class, ``weight`` (default 1) its share of the total loss, and every other key is passed to the class."""

from __future__ import annotations

import dataclasses
import importlib

import ml_collections

from jaxssl.tasks.base import Task

# kind -> 'module:Class'; imported lazily so a config error is reported before anything heavy loads.
TASKS: dict[str, str] = {
    'classify': 'jaxssl.tasks.classification:Classification',
    'rotation': 'jaxssl.pretext.rotation:Rotation',
    'jigsaw': 'jaxssl.pretext.jigsaw:JigsawPermutation',
    'jigsaw_coords': 'jaxssl.pretext.jigsaw:JigsawCoords',
    'multitask': 'jaxssl.tasks.multitask:CategoryAttributes',   # DeepFashion: category + attributes
}

# Options every task class receives from the dataset rather than from the config.
_FROM_DATASET = ('num_classes', 'mean', 'std', 'num_attributes', 'attribute_frequency')


def task_class(kind: str):
  if kind not in TASKS:
    raise ValueError(f"unknown task kind '{kind}'; choose one of: {', '.join(sorted(TASKS))}")
  module, cls = TASKS[kind].split(':')
  return getattr(importlib.import_module(module), cls)


def check_tasks(tasks_cfg: ml_collections.ConfigDict) -> None:
  """Rejects an unknown kind or option with one message, before any data or model is built."""
  if not tasks_cfg:
    raise ValueError('config.tasks is empty: name at least one task, e.g. tasks.classify = {}')
  for name, cfg in tasks_cfg.items():
    cls = task_class(cfg.get('kind', name))
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(cfg.keys()) - fields - {'kind', 'weight'}
    if unknown:
      raise ValueError(f"task '{name}' ({cls.__name__}) has no option(s) {sorted(unknown)}; "
                       f"its options are: {sorted(fields - set(_FROM_DATASET) - {'name'})}")


def build_tasks(tasks_cfg: ml_collections.ConfigDict, info) -> tuple[list[Task], dict[str, float]]:
  check_tasks(tasks_cfg)
  tasks, weights = [], {}
  for name, cfg in tasks_cfg.items():
    cls = task_class(cfg.get('kind', name))
    options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k not in ('kind', 'weight')}
    fields = {f.name for f in dataclasses.fields(cls)}
    from_dataset = {'num_classes': info.num_classes, 'mean': info.mean, 'std': info.std,
                    'num_attributes': len(info.attribute_names), 'attribute_frequency': info.attribute_frequency}
    options.update({k: v for k, v in from_dataset.items() if k in fields})
    tasks.append(cls(name=name, **options))
    weights[name] = float(cfg.get('weight', 1.0))
  return tasks, weights

