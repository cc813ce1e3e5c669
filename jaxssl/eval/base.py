"""The evaluator contract, its registry, and the one loop that runs a model over a split.

An evaluator receives an :class:`EvalContext` (what the run built: config, dataset, tasks, mesh, model
structure, workdir) and its options, and ``run(state, phase)`` returns metrics (and may write files into the
workdir). The trainer and the ``--mode`` runners only loop over the evaluators a run names; adding one is a file
in this folder and a line in :data:`EVALUATORS` (or a ``'module:Class'`` path), then ``config.evals.<name>``.

Phases: ``eval`` (every ``eval_every`` steps while training), ``final`` (the end of training), ``checkpoint``
(``--mode=eval`` on a restored checkpoint). Each evaluator has a default set, which ``at`` overrides.

Which evaluators run: ``metrics``, ``filters`` and ``curves`` always, plus those each task asks for
(``Task.evaluators()``: a classifier its confusion matrix, a linear probe its embedding, the DeepFashion task its
attribute report), plus every entry of ``config.evals`` (``{name: {type: <registry name>, at: [...], options}}``;
``type`` defaults to the name; an entry named like a default replaces its options; ``enabled: False`` drops it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import jax
import ml_collections
import numpy as np
from flax import nnx

from jaxssl import files, registry, sharding
from jaxssl.data import datasets, pipeline

PHASES = ('eval', 'final', 'checkpoint')

# name -> 'module:Class'; imported when a run uses it.
EVALUATORS: dict[str, str] = {
    'metrics': 'jaxssl.eval.metrics:SplitMetrics',
    'confusion': 'jaxssl.eval.confusion:Confusion',
    'attributes': 'jaxssl.eval.attributes:Attributes',
    'knn': 'jaxssl.eval.knn:Knn',
    'embedding': 'jaxssl.eval.embedding:ProbeEmbedding',
    'filters': 'jaxssl.eval.filters:Filters',
    'curves': 'jaxssl.eval.plots:Curves',
    'online_knn': 'jaxssl.eval.online_knn:OnlineKnn',   # the online probe's k-NN monitor
    'reconstructions': 'jaxssl.eval.reconstructions:Reconstructions',
}
ALWAYS = ('metrics', 'filters', 'curves')


@dataclasses.dataclass
class EvalContext:
  """What every evaluator may use, built once per run (by jaxssl/train/experiment.py)."""
  config: ml_collections.ConfigDict
  info: datasets.DatasetInfo
  tasks: list
  weights: dict[str, float]
  graphdef: nnx.GraphDef
  mesh: jax.sharding.Mesh
  workdir: str
  train_source: Any
  eval_source: Any
  _sources: dict = dataclasses.field(default_factory=dict, repr=False)   # (split, limit) -> source, loaded once
  # Sums one evaluator's pass over the eval split made for another (the split metrics' pass counts the
  # confusion matrices the confusion evaluator would read the split again for): name -> (phases it is wanted
  # at, (the state it was made for, the sums) or None). See :meth:`want` and :meth:`shared`.
  _shared: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def eval_split(self) -> str:
    return self.config.data.eval_split

  def want(self, name: str, phases: Iterable[str]) -> None:
    """An evaluator asks that the eval split's pass of another, which runs before it, keep ``name``'s sums at
    ``phases`` (:meth:`shared`)."""
    self._shared[name] = (set(self._shared.get(name, (set(), None))[0]) | set(phases), None)

  def wanted(self, name: str, phase: str) -> bool:
    return phase in self._shared.get(name, ((), None))[0]

  def keep(self, name: str, state, sums) -> None:
    """``sums`` of ``name`` over the eval split, made for ``state`` (by the pass that runs first)."""
    self._shared[name] = (self._shared.get(name, (set(), None))[0], (state, sums))

  def shared(self, name: str, state):
    """The sums of ``name`` another evaluator's pass made for this very ``state`` (the object: a later step,
    another checkpoint, is another state), or None."""
    kept = self._shared.get(name, ((), None))[1]
    return kept[1] if kept is not None and kept[0] is state else None

  def source(self, split: str, limit: int | None = None):
    """A split of the run's dataset (``limit`` defaults to the eval split's ``data.eval_limit``)."""
    if split == self.config.data.eval_split and limit is None:
      return self.eval_source
    limit = self.config.data.eval_limit if limit is None else limit
    if (split, limit) not in self._sources:
      self._sources[split, limit] = datasets.load_split(self.info, split, self.config.data, limit)
    return self._sources[split, limit]

  def compile(self, fn: Callable, *, per_example: bool = False) -> Callable:
    """``fn(model, batch)`` as a jitted ``(state, batch)`` function over the mesh. ``per_example``: the outputs
    keep the batch axis (sharded like the batch), else they are reduced (replicated)."""

    def apply(state, batch):
      return fn(nnx.merge(self.graphdef, state.params, state.model_state), batch)

    replicated = sharding.replicated(self.mesh)
    out = sharding.batch_sharding(self.mesh) if per_example else replicated
    return jax.jit(apply, in_shardings=(replicated, sharding.batch_sharding(self.mesh)), out_shardings=out)

  def batches(self, source=None, tasks: Iterable | None = (), batch_size: int | None = None):
    """Eval batches of ``source`` (default: the eval split), every record once, padding rows weighted 0:
    ``{task: task batch}`` for ``tasks`` (default: the run's), raw batches for ``tasks=None``."""
    tasks = self.tasks if tasks == () else tasks
    return pipeline.eval_batches(self.eval_source if source is None else source, tasks,
                                 global_batch=batch_size or self.config.eval_batch_size, seed=self.config.seed,
                                 mesh=self.mesh)

  def accumulate(self, fn: Callable, state, batches) -> Any:
    """The sum over ``batches`` of a compiled (reducing) ``fn(state, batch)``, on the host."""
    sums = None
    for batch in batches:
      out = fn(state, sharding.shard_batch(batch, self.mesh))
      sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
    return jax.device_get(sums)

  def gather(self, fn: Callable, state, batches, keep: Callable[[dict], Any],
             fields: Callable[[dict], dict] = lambda b: {}) -> dict[str, np.ndarray]:
    """Rows of a compiled per-example ``fn(state, batch)`` and of ``fields(batch)`` over ``batches``, on the host
    in global order, padding dropped (``keep(batch)``: the rows to keep, e.g. ``batch['weight'] > 0``)."""
    parts: dict[str, list[np.ndarray]] = {}
    for batch in batches:
      sharded = sharding.shard_batch(batch, self.mesh)
      rows = {k: host(v) for k, v in {**fn(state, sharded), **fields(sharded)}.items()}
      kept = host(keep(sharded))
      for k, v in rows.items():
        parts.setdefault(k, []).append(v[kept])
    return {k: np.concatenate(v) for k, v in parts.items()}


def host(x) -> np.ndarray:
  """A global array (maybe spread over processes) as one numpy array on every host."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel  # multi-process only
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


@dataclasses.dataclass
class Evaluator:
  """Base of every evaluator: a dataclass whose fields after ``ctx`` are its options."""
  ctx: EvalContext
  at: tuple[str, ...] = ('final', 'checkpoint')   # the phases it runs in
  # Whether its results are written to metrics.jsonl / TensorBoard under the eval split (scalar curves).
  logged: ClassVar[bool] = False
  # Evaluators run in this order (stable): the split metrics first, the curves drawn from them last.
  order: ClassVar[int] = 0

  def run(self, state, phase: str) -> dict[str, Any]:
    """Metrics of ``state`` (a train state: ``step``, ``params``, ``model_state``)."""
    raise NotImplementedError

  def stem(self, name: str, state, phase: str) -> str:
    """A file path stem in the workdir: ``name`` at the end of training, ``name_<split>_step<N>`` otherwise (so
    evaluating several checkpoints keeps each one's files)."""
    base = name if phase == 'final' else f'{name}_{self.ctx.eval_split}_step{int(state.step)}'
    return files.join(self.ctx.workdir, base)


def evaluator_class(kind: str) -> type[Evaluator]:
  """The evaluator class of ``kind`` (a name in :data:`EVALUATORS` or a ``'module:Class'`` path)."""
  found = registry.lookup(kind, EVALUATORS, 'evaluator')
  if not (isinstance(found, type) and issubclass(found, Evaluator)):
    raise ValueError(f"evaluator '{kind}': {EVALUATORS.get(kind, kind)} is not a subclass of "
                     'jaxssl.eval.base.Evaluator')
  return found


def _entries(config, tasks) -> dict[str, dict[str, Any]]:
  """name -> options (with 'type') of every evaluator a run has: the defaults, then config.evals."""
  names = list(ALWAYS[:1]) + [n for t in tasks for n in t.evaluators()] + list(ALWAYS[1:])
  entries = {n: {'type': n} for n in dict.fromkeys(names)}
  for name, options in config.evals.items():
    options = dict(options or {})
    if not options.pop('enabled', True):
      entries.pop(name, None)
      continue
    entries[name] = {'type': options.pop('type', name), **options}
  return entries


def check_evals(config, tasks=()) -> None:
  """Part of the config check: unknown evaluators, options or phases are one line before anything runs."""
  for name, options in _entries(config, tasks).items():
    cls = evaluator_class(options['type'])
    fields = {f.name for f in dataclasses.fields(cls)} - {'ctx'}
    unknown = set(options) - fields - {'type'}
    if unknown:
      raise ValueError(f"evaluator '{name}' ({cls.__name__}) has no option(s) {sorted(unknown)}; its options are: "
                       f'{sorted(fields)} (set --config.evals.{name}.<option>)')
    wrong = registry.option_type_errors(cls, {k: v for k, v in options.items() if k != 'type'})
    if wrong:
      raise ValueError(f"evaluator '{name}' ({cls.__name__}): {'; '.join(wrong)} (set --config.evals.{name}.<option>)")
    bad = set(options.get('at', ())) - set(PHASES)
    if bad:
      raise ValueError(f"evaluator '{name}': unknown phase(s) {sorted(bad)} in 'at'; choose from: {', '.join(PHASES)}")


def build_evaluators(ctx: EvalContext) -> list[Evaluator]:
  """Every evaluator of the run (see the module docstring), in running order."""
  check_evals(ctx.config, ctx.tasks)
  out = []
  for options in _entries(ctx.config, ctx.tasks).values():
    options = dict(options)
    cls = evaluator_class(options.pop('type'))
    if 'at' in options:
      options['at'] = tuple(options['at'])
    out.append(cls(ctx, **options))
  return sorted(out, key=lambda e: e.order)


def run_phase(evaluators: Iterable[Evaluator], state, phase: str,
              on_logged: Callable[[dict[str, Any]], None] = lambda m: None) -> dict[str, Any]:
  """Runs the evaluators of ``phase`` in order; their merged results. ``on_logged`` receives each logged
  evaluator's results as soon as they exist (the trainer writes them to metrics.jsonl, which the curves read)."""
  results: dict[str, Any] = {}
  for ev in evaluators:
    if phase in ev.at:
      out = ev.run(state, phase)
      if ev.logged:
        on_logged(out)
      results.update(out)
  return results
