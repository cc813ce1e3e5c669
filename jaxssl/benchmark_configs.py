"""The benchmark's configs (jaxssl/benchmark.py): the pretext configs an init names, joined for a combination, the
pretext run's config with the benchmark's budget and overrides, the fine-tuning recipe each cell starts from, and
what differs between a trained run's recorded config and the one the benchmark would train now."""

from __future__ import annotations

import itertools
import json
import os
import sys
from typing import Any

import ml_collections

from jaxssl import cli


class BenchmarkConfigError(ValueError):
  """A benchmark config that names a pretext config that is not there, or overrides a key it does not have."""


def is_config_spec(spec: str) -> bool:
  """A pretext config ``path.py[:arg]``, or several joined by ``+`` (pretrained here), as opposed to a workdir or
  weights file ('' = random)."""
  return bool(spec) and all(part.partition(':')[0].endswith('.py') for part in spec.split('+'))


def given_path(spec: str) -> str:
  """A given workdir or weights file as one string however it is spelt (relative, absolute, a trailing slash); ''
  stays '' (a random backbone)."""
  return os.path.realpath(spec) if spec else ''


def load_config(spec: str) -> ml_collections.ConfigDict:
  """``path.py[:arg]`` loaded as ml_collections' config flags load it: the module's ``get_config(arg)`` (or
  ``get_config()`` without an argument). A relative path is looked up from the current folder, then from each
  folder of ``sys.path`` (the checkout, where ``configs/`` lives). Several joined by ``+`` are one run of all their
  tasks (:func:`join_configs`)."""
  if '+' in spec:
    parts = spec.split('+')
    return join_configs([load_config(part) for part in parts], parts)
  path, colon, arg = spec.partition(':')
  found = next((p for p in [path] + [os.path.join(d, path) for d in sys.path if d and not os.path.isabs(path)]
                if os.path.isfile(p)), None)
  if found is None:
    raise BenchmarkConfigError(f"benchmark init config '{path}' not found (from {os.getcwd()} or sys.path); give "
                               'a path such as configs/fmnist_rotation.py[:arg]')
  found = os.path.abspath(found)
  root = os.path.dirname(os.path.dirname(found))   # configs import their siblings: `from configs import common`
  if root not in sys.path:
    sys.path.insert(0, root)
  return cli.load_config_file(found, arg if colon else None,
                              '_jaxssl_benchmark_' + os.path.splitext(os.path.basename(found))[0])


def join_configs(configs: list[ml_collections.ConfigDict], names: list[str]) -> ml_collections.ConfigDict:
  """One pretext run of every task of ``configs`` on one backbone, their losses summed by their own weights: the
  first config's recipe (model, data, schedule, optimizer) with the other configs' tasks added. The configs must
  build the same model and name different tasks; otherwise one line says which. Tasks that feed the backbone
  different input sizes (a jigsaw's tiles, full images) share it only where its parameters do not depend on the
  size (a ResNet, as configs/fmnist_rotation_jigsaw.py does; not CifarNet, whose fc1 does):
  :func:`combination_spec` groups candidates by their trained backbones' parameter shapes."""
  joined = configs[0].copy_and_resolve_references()
  for other, name in zip(configs[1:], names[1:]):
    if other.model.to_dict() != joined.model.to_dict():
      raise BenchmarkConfigError(f"'{'+'.join(names)}': {name} builds model {other.model.to_dict()}, {names[0]} "
                                 f'builds {joined.model.to_dict()}; tasks joined in one run share one backbone')
    with joined.unlocked():
      for task, options in other.tasks.items():
        if task in joined.tasks:
          raise BenchmarkConfigError(f"'{'+'.join(names)}': task '{task}' is in more than one of them")
        joined.tasks[task] = options.copy_and_resolve_references()
  return joined


def combination_spec(candidates: list[tuple[str, str, float, Any]], top: int) -> tuple[str, list[str]]:
  """The joined spec and init names of the combination: candidates are ``(init, config spec, validation probe
  top-1, backbone signature)``; inits whose backbones have the same signature (parameter shapes: one model on one
  input size, so not a jigsaw's tile-sized CifarNet beside a 28 px one) form a group, filled in order of
  validation probe up to ``top`` with those that join (:func:`join_configs`: no task twice, e.g. autoencoder and
  denoising). The group with the most members, then the best mean validation probe, is the combination; ('', [])
  when no group has two."""
  groups: dict[Any, list[tuple[str, str, float]]] = {}
  for init, spec, val, signature in sorted(candidates, key=lambda c: -c[2]):   # ties: in the given order
    group = groups.setdefault(signature, [])
    specs = [s for _, s, _ in group] + [spec]
    if len(group) == top:
      continue
    try:
      join_configs([load_config(s) for s in specs], specs)
    except BenchmarkConfigError:
      continue
    group.append((init, spec, val))
  joinable = [g for g in groups.values() if len(g) >= 2]
  if not joinable:
    return '', []
  best = max(joinable, key=lambda g: (len(g), sum(v for _, _, v in g) / len(g)))
  return '+'.join(spec for _, spec, _ in best), [init for init, _, _ in best]


def merge(config: ml_collections.ConfigDict, overrides, where: str, path: str = '') -> None:
  """Sets ``overrides`` (nested) into ``config`` (``path``: where ``config`` is in the run's config, '' its root);
  a key ``config`` lacks is one line, not a silent new key, except in the blocks whose keys are open
  (:data:`jaxssl.cli.OPEN_BLOCKS`: a backbone's option such as ``model.options.dtype``, a task), which the config
  check then checks."""
  for key, value in overrides.items():
    here = f'{path}.{key}' if path else key
    if key not in config:
      if not any(here.startswith(f'{block}.') for block in cli.OPEN_BLOCKS):
        raise BenchmarkConfigError(f"{where}: the config has no key '{key}' (it has: {', '.join(sorted(config))})")
      config[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
    elif isinstance(value, ml_collections.ConfigDict) and isinstance(config[key], ml_collections.ConfigDict):
      merge(config[key], value, f'{where}.{key}', here)
    else:
      config[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


def set_key(config: ml_collections.ConfigDict, path: str, value, where: str) -> None:
  """Sets the dotted ``path`` (``optim.backbone_lr_scale``) of ``config``; a key it lacks is one line."""
  *parents, last = path.split('.')
  node = config
  for key in parents:
    if key not in node or not isinstance(node[key], ml_collections.ConfigDict):
      raise BenchmarkConfigError(f"{where}='{path}': the config has no block '{key}'")
    node = node[key]
  if last not in node:
    raise BenchmarkConfigError(f"{where}='{path}': the config has no key '{last}'")
  node[last] = value


# Keys each fine-tuning cell's config derives from its subset and role (study.cell_config, Benchmark._cells): a
# grid value set after them would leave what they derive (steps, warmup, checkpoints) stale, or undo the protocol.
DERIVED_KEYS = ('init_from', 'seed', 'batch_size', 'total_steps', 'eval_every', 'checkpoint_every',
                'optim.warmup_epochs', 'data.train_fraction', 'data.subset_seed', 'data.subset_mode', 'data.eval_split',
                'data.holdout_fraction', 'data.holdout_seed')


def check_values(b: ml_collections.ConfigDict) -> None:
  """``benchmark.inits``, each a string (a config spec, a path, '' for random), and ``benchmark.fractions`` and
  ``benchmark.select.fractions``, labelled fractions in (0, 1], at least one to fine-tune at: checked when the
  benchmark starts, not when its part that reads them does (after every pretext run and probe)."""
  odd = [f'{k}={v!r}' for k, v in b.inits.items() if not isinstance(v, str)]
  if odd:
    raise BenchmarkConfigError(f'benchmark.inits: {", ".join(odd)}: an init is a config file (configs/x.py[:arg]), '
                               "a workdir, a weights file, or '' for a random backbone")
  from jaxssl.data.subsets import check_fractions  # pylint: disable=import-outside-toplevel
  for key, fractions, least in (('fractions', b.fractions, 1), ('select.fractions', b.select.get('fractions', ()), 0)):
    try:
      check_fractions(fractions, f'--config.benchmark.{key}', least)
    except ValueError as e:
      raise BenchmarkConfigError(str(e)) from None


def select_grid(select: ml_collections.ConfigDict) -> list[tuple[str, tuple]]:
  """``benchmark.select.grid`` checked, as ``[(key, choices)]``: the fine-tuning hyper-parameters chosen on the
  validation images, every combination of their choices tried (:func:`grid_choices`); empty: none. Each
  combination names its selection cell's directory (:func:`choice_name`), so the names must differ and hold no
  character the directory, the results' labels or the CSV would read otherwise."""
  if 'key' in select or 'choices' in select:
    raise BenchmarkConfigError(
        'benchmark.select.key/choices are now benchmark.select.grid, pairs of (config key, choices): in the config '
        "file, replace them with select.grid = (('optim.backbone_lr_scale', (0.1, 1.0)),) (your key and choices)")
  grid = []
  for pair in select.get('grid', ()):
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str) and
            isinstance(pair[1], (tuple, list)) and len(pair[1])):
      raise BenchmarkConfigError(f'benchmark.select.grid: {pair!r} is not a pair (config key, (choice, ...)), e.g. '
                                 "('optim.grad_clip_norm', (0.0, 1.0))")
    if pair[0] in DERIVED_KEYS:
      raise BenchmarkConfigError(f"benchmark.select.grid: '{pair[0]}' is set per cell by the benchmark (its subset, "
                                 'schedule or split), so it cannot be chosen; the cells\' epochs are '
                                 'benchmark.epochs and benchmark.min_steps')
    odd = [v for v in pair[1] if any(ch in show(v) for ch in '/,= \t\n') or not show(v)]
    if odd:
      raise BenchmarkConfigError(f"benchmark.select.grid: '{pair[0]}' has the choice {odd[0]!r}, which would not name "
                                 'a selection cell unambiguously (no /, comma, = or space): give numbers or words')
    grid.append((pair[0], tuple(pair[1])))
  names = [short_key(key) for key, _ in grid]
  clash = sorted({n for n in names if names.count(n) > 1})
  if clash:
    raise BenchmarkConfigError(f'benchmark.select.grid: more than one key ends in {", ".join(clash)} (a selection '
                               "cell's directory names each key by its last part): give each key once")
  for key, choices in grid:
    shown = [show(v) for v in choices]
    same = sorted({v for v in shown if shown.count(v) > 1})
    if same:
      raise BenchmarkConfigError(f"benchmark.select.grid: '{key}' has the choice {same[0]} twice (as its selection "
                                 'cell names it): give each choice once')
  return grid


def grid_choices(grid: list[tuple[str, tuple]]) -> list[tuple]:
  """Every combination of the grid's choices, one value per key, the first key's choices outermost (the order in
  which equal scores are won)."""
  return list(itertools.product(*(choices for _, choices in grid))) if grid else []


def show(value) -> str:
  """A grid value as the selection cell's directory and the results name it: ``0.1``, ``1``, ``1e-05``, ``sgd``
  (a number as short as names it exactly: ``0.1000001`` is not ``0.1``)."""
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return f'{value:g}' if float(f'{value:g}') == value else repr(value)
  return str(value)


def choice_label(values) -> str:
  """The values of one grid combination, in the grid's order: ``0.1`` (one key), ``0.1,1``."""
  return ','.join(show(v) for v in values)


def choice_name(grid: list[tuple[str, tuple]], values) -> str:
  """A selection cell's directory suffix: ``backbone_lr_scale=0.1`` (one key, as before the grid),
  ``backbone_lr_scale=0.1,grad_clip_norm=1``."""
  return ','.join(f'{short_key(key)}={show(v)}' for (key, _), v in zip(grid, values))


def short_key(key: str) -> str:
  """A grid key as selection cells and results.csv name it: its last part (``optim.grad_clip_norm`` ->
  ``grad_clip_norm``; :func:`select_grid` rejects two keys with one last part)."""
  return key.rsplit('.', 1)[-1]


def pretrain_config(config: ml_collections.ConfigDict, spec: str) -> ml_collections.ConfigDict:
  """The pretext run of ``spec``, with the benchmark's data location, its model block where
  ``benchmark.one_model`` (the tasks' features renamed by ``benchmark.feature_map``), ``benchmark.pretrain_epochs``
  (> 0) and ``benchmark.pretrain_overrides``."""
  c = load_config(spec)
  with c.unlocked():
    for key in config.benchmark.pretrain_data_keys:
      c.data[key] = config.data[key]
    # Nothing trains on the validation images: not even a pretext task (the supervised init would use their labels).
    c.data.holdout_fraction, c.data.holdout_seed = float(config.benchmark.val_fraction), int(config.benchmark.val_seed)
    if config.benchmark.get('one_model', False):   # one backbone for every run: the benchmark's model block
      c.model = config.model.copy_and_resolve_references()
      renamed = config.benchmark.get('feature_map') or {}
      for options in list(c.tasks.values()) + ([c.online_probe] if 'online_probe' in c else []):
        if options.get('feature') in renamed:
          options.feature = renamed[options.feature]
    if config.benchmark.pretrain_epochs > 0:   # one budget for every pretext run (its own schedule otherwise)
      c.num_epochs, c.total_steps = float(config.benchmark.pretrain_epochs), 0
    merge(c, config.benchmark.pretrain_overrides, 'benchmark.pretrain_overrides')
    # A warmup longer than its share of the run (SimCLR's and BYOL's 10 epochs in a 3-epoch budget) would leave the
    # run warming up to its end, never at its learning rate: cut to the share.
    share = float(config.benchmark.get('max_warmup_share', 0.0))
    if share > 0 and not c.total_steps and c.num_epochs > 0 and c.optim.warmup_epochs > share * c.num_epochs:
      c.optim.warmup_epochs = round(share * float(c.num_epochs), 6)
  return c


# Keys of a pretext run's config that say where the data is, how it is read, or how often the run logs, evaluates
# and saves, not what it trains: a run whose config differs only there is not stale (the data may move between
# calls; a checkpoint interval may change).
IGNORED_KEYS = ('data.data_dir', 'data.source_dir', 'data.decoded_cache', 'data.num_workers', 'data.read_threads',
                'data.prefetch_batches', 'data.eval_limit', 'lock_timeout_s', 'log_every', 'eval_every',
                'eval_batch_size', 'checkpoint_every', 'keep_checkpoints')


# A fine-tuning cell scores its validation or test images under data.eval_limit: another limit is another result.
CELL_IGNORED_KEYS = tuple(k for k in IGNORED_KEYS if k != 'data.eval_limit')


def config_changes(trained: dict[str, Any], wanted: dict[str, Any],
                   ignored: tuple[str, ...] = IGNORED_KEYS) -> list[tuple[str, Any, Any]]:
  """(dotted key, trained value, wanted value) where a run's recorded config and the config the benchmark would
  train now disagree: a task added or removed (``tasks``), or a value both have; a key only one has (added to
  jaxssl since, at its old behaviour) and ``ignored`` (a pretext run's :data:`IGNORED_KEYS`, a fine-tuning cell's
  :data:`CELL_IGNORED_KEYS`) do not count."""
  def flat(d, prefix=''):
    out = {}
    for k, v in d.items():
      out.update(flat(v, f'{prefix}{k}.') if isinstance(v, dict) else {f'{prefix}{k}': v})
    return out

  wanted = json.loads(json.dumps(wanted))
  out = []
  tasks = sorted(trained.get('tasks') or {}), sorted(wanted.get('tasks') or {})
  if tasks[0] != tasks[1]:
    out.append(('tasks', tasks[0], tasks[1]))
  a, b = flat(trained), flat(wanted)
  return out + [(k, a[k], b[k]) for k in sorted(set(a) & set(b)) if a[k] != b[k] and k not in ignored]


def describe_changes(changes: list[tuple[str, Any, Any]]) -> str:
  """The first few of :func:`config_changes` for one line: ``key old -> new; ...``."""
  return '; '.join(f'{k} {a!r} -> {b!r}' for k, a, b in changes[:4]) + ('; ...' if len(changes) > 4 else '')


def downstream_config(config: ml_collections.ConfigDict, init_from: str) -> ml_collections.ConfigDict:
  """The benchmark's own recipe (fine-tuning a classifier) without the ``benchmark`` block, from ``init_from``."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    del c['benchmark']
    c.init_from = init_from
    # A pretext backbone built for other inputs (CifarNet on jigsaw tiles: fc1 sized for a tile) transfers what
    # fits (its convolutions); the rest keeps the classifier's init (init_from.json lists it).
    c.init_mismatched = 'skip'
  return c


def cell_base(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config jaxssl.study.cell_config expects: the recipe plus a ``study`` block."""
  b = config.benchmark
  c = downstream_config(config, '')
  with c.unlocked():
    c.data.holdout_fraction, c.data.holdout_seed = float(b.val_fraction), int(b.val_seed)  # never fine-tuned on
    c.study = ml_collections.ConfigDict({'epochs': float(b.epochs), 'min_steps': int(b.min_steps),
                                         'subsets': str(b.subsets), 'warmup_share': float(b.get('warmup_share', 0))})
  return c
