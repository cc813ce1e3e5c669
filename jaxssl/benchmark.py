r"""The benchmark (issue 18): every init evaluated the same way, resumably, by one command.

  python -m jaxssl.benchmark --config configs/fmnist_benchmark.py --workdir runs/benchmark
  python -m jaxssl.benchmark --config configs/fmnist_benchmark.py:quick --workdir /tmp/benchmark_quick

For every init of ``benchmark.inits`` (name -> a pretext config ``path[:arg]``, ``''`` for a random backbone, or a
trained workdir / weights file used as it is), in this order:

1. **pretrain**: the config's run in ``<workdir>/pretrain/<init>/`` (the data keys of
   ``benchmark.pretrain_data_keys`` taken from the benchmark's config, the validation images held out, then
   ``benchmark.pretrain_overrides``);
   skipped when its ``final_metrics.json`` exists, resumed from its checkpoint when interrupted.
2. **probe**: every backbone layer's features extracted once into ``<workdir>/probe/<init>/features_d<max_dim>/``
   and a linear probe per layer, its L2 strength and epoch chosen on the validation images (below), the test
   split scored once (jaxssl/eval/cached_probe.py); ``probe/<init>/probe.json`` (per layer:
   ``probe_<layer>.json``, skipped when there). ``benchmark.probe.keep_features=False`` deletes the cache once the
   probe and the k-NN are written.
3. **knn**: weighted k-NN (``benchmark.knn``: 200-NN, T = 0.07 by default) of the test split among the probe's training
   part, on the cached features of the layer the probe chose on validation; ``probe/<init>/knn.json``. **lowshot**
   (``benchmark.lowshot``): the linear probe fitted again on the labels of each fine-tuning subset only (every
   fraction below 1 x seed: :func:`lowshot_indices`, the very images of part 4's cells) at every layer of
   ``benchmark.lowshot_layers`` (() all the probed ones), its layer, L2 strength and epoch chosen on the
   validation images for each subset (few labels favour smaller layers than every label does);
   ``probe/<init>/lowshot.json``.
4. **finetune**: jaxssl/study.py's cells (the config's fine-tuning recipe from that init), ``benchmark.fractions``
   x ``benchmark.seeds``, the same class-stratified subsets for every init, drawn from the training images less
   the validation images (``data.holdout_fraction``); the random init's cells are the from-scratch baseline. Per
   init and fraction of ``benchmark.select.fractions``, first a selection cell per combination of the values of
   ``benchmark.select.grid`` (pairs of a config key and its choices; by default the backbone's learning-rate
   scale, 0.1 or 1, times the gradient's clipping norm, none or 1) on subset ``select.seed``, scored on the
   validation images (``<workdir>/finetune/select/<cell>_<key>=<value>,...``); the test cells
   (``<workdir>/finetune/cells/<init>_f<fraction>_s<seed>/``) then train with the values chosen there (a fraction
   not selected at takes the largest selected one's below it, or below every one the smallest's). At a selected
   fraction the test cell on subset ``select.seed`` would train exactly what the chosen selection cell trained, so
   it takes that training (``reused.json``) and only scores the test split. A cell whose loss goes non-finite
   writes ``diverged.json`` and the benchmark goes on (a selection value that diverged loses; the results count a
   test cell that did). Fractions run smallest first, so an interrupted benchmark has its low-label columns
   complete first.

The validation images (``benchmark.val_fraction`` of the training images, class-stratified, ``val_seed``) are
one set for every init and every part: the pretext runs, the probe's training part and the fine-tuning subsets
never contain them,
and every choice (probe layer, L2, epoch; the fine-tuning hyper-parameters) is made on them. The test split is
scored once per cell, by the chosen model only.

Every part is skipped when its result file exists: rerunning the command continues where it stopped. At the start and
after each init's parts it logs what is left and a rough time for it (:meth:`Benchmark.outlook`); each run and the
fine-tuning cells log their own step-based ETA. At the start, after each init's parts 1-3 where any was made, after each
fraction's fine-tuning column, at the end, and on a stop signal that comes during a run's final evaluation (one during
training stops at once: the next call writes them at its start),
``results.md``, ``results.csv``, ``results.json`` (one row per init: best layer's probe, k-NN, fine-tuning at each
fraction as mean +- std over seeds; wall time per part from ``timings.json``; then ``benchmark.targets`` checked against
them, each init's fine-tuning less scratch's per subset, the frozen-feature table of the lowshot part, the probe at
every layer beside each pretext run's own-task figure, and what measured it: every call's date, command, commit and
machine, appended to ``calls.jsonl``), ``probe_layers.png`` (per-layer test top-1 of every init),
``label_efficiency.png`` (every init's curve with error bars: fine-tuned, and the lowshot probe's beside it),
``gain_over_scratch.png`` (each init's fine-tuning less scratch's on the same subsets, a panel per fraction with the
targets' lines), ``pretext_curves.png`` (each pretext run's own task over its epochs), ``filters.png`` (the first
convolution each pretrained backbone learned, one panel per init) and ``reconstructions.png`` (the last
reconstructions each dense pretext run drew: autoencoder, denoising, inpainting) are rewritten from what is on
disk; ``timings.json`` and ``cpu_timings.json`` hold the wall and CPU seconds of every part, a SIGSTOP pause left
out (:class:`jaxssl.benchmark_records.Ledger`).

Nothing made is kept under another recipe (a record from before its file kept its settings is taken as made with today's
where it cannot tell), and nothing is deleted: a pretext run (finished or under way) trained with another config than
the benchmark's now, or a fine-tuning cell trained with another recipe, stops the benchmark with one line naming the
change; ``benchmark.retrain=('<init>',)`` moves that run and every part made from it, and
``benchmark.retrain_cells=True`` every cell, to ``<workdir>/stale/<name>-<UTC time>/`` with their seconds, and they are
made again. A probe, k-NN or lowshot made with other settings moves there by itself (minutes to redo).
``benchmark.only=('<init>',)`` runs the named inits alone beside scratch; ``benchmark.combine`` adds the init
``combination`` (the best self-supervised inits on validation whose backbones share a shape, trained together;
``combination.json`` keeps the choice).
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from typing import Any

import ml_collections
import numpy as np

from jaxssl import benchmark_figures as figures, benchmark_records as records, benchmark_tables as tables
from jaxssl import cli, study
from jaxssl.benchmark_configs import (CELL_IGNORED_KEYS, BenchmarkConfigError, cell_base, check_values,
                                      choice_label, choice_name, combination_spec, config_changes, describe_changes,
                                      downstream_config, given_path, grid_choices, is_config_spec, load_config, merge,
                                      pretrain_config, select_grid, set_key)
from jaxssl.runlog import write_json, write_text, writing

COMBINATION = 'combination'   # the init benchmark.combine adds (Benchmark.choose_combination)
DIVERGED = 'diverged.json'    # in a fine-tuning cell that diverged: done, with no score (Benchmark.finetune)


# ------------------------------------------------------------------------------------------------ helpers


def transferred_layers(names: list[str], wanted: list[str], not_transferred: list[str]) -> list[str]:
  """The layers of ``names`` (forward order) worth probing: ``wanted`` (all if empty), up to the first layer
  whose parameters were not transferred (a jigsaw CifarNet's fc1: it and everything after it would be a random
  layer's features)."""
  stop = next((i for i, name in enumerate(names) if any(name in p.split('/') for p in not_transferred)),
              len(names))
  return [n for n in (wanted or names) if n in names[:stop]]


def lowshot_indices(labels, train_idx, fraction: float, seed: int, mode: str) -> np.ndarray:
  """Indices (into all the training records) of the labelled subset a fine-tuning cell of ``fraction`` and
  ``seed`` trains on: drawn, as subsets.load_sources and build_experiment draw it, from the records left after the
  validation images (``train_idx``)."""
  from jaxssl.data import subsets  # pylint: disable=import-outside-toplevel
  train_idx = np.asarray(train_idx)
  return train_idx[subsets.labelled_subset(np.asarray(labels)[train_idx], fraction, seed, mode)]


def loop_train(c: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  from jaxssl.train import loop  # pylint: disable=import-outside-toplevel
  return loop.train_and_evaluate(c, workdir)


# ------------------------------------------------------------------------------------------------ parts



class Benchmark:
  """The parts of one benchmark directory (module docstring); each method skips what is done."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, os.path.abspath(workdir)
    self.b = config.benchmark
    self.grid = select_grid(self.b.select)   # [(key, choices)]: the fine-tuning hyper-parameters chosen on val
    check_values(self.b)
    # ml_collections iterates keys in name order; the random init (scratch) goes last, as the table's reference.
    self.inits = {k: v for k, v in self.b.inits.items() if k != 'random'}
    if COMBINATION in self.b.inits:
      raise BenchmarkConfigError(f"benchmark.inits: '{COMBINATION}' is the name of the init benchmark.combine adds; "
                                 'name yours otherwise')
    if 'random' not in self.b.inits:
      raise BenchmarkConfigError("benchmark.inits needs 'random' (''): its fine-tuning cells are the from-scratch "
                                 'baseline every other init is compared with')
    self.inits['random'] = self.b.inits['random']
    with writing(self.workdir, self.workdir):   # a file there, or a folder it may not write: one line
      os.makedirs(self.workdir, exist_ok=True)
    self.combination = records.read_json(os.path.join(self.workdir, 'combination.json'))
    chosen = bool(self.combination and self.combination.get('spec'))
    # benchmark.only: these inits alone, and the random init (scratch, the reference of every comparison); no
    # combination is chosen from them (it is the full benchmark's choice, kept in combination.json).
    self.only = tuple(str(name) for name in self.b.get('only', ()))
    unknown = [name for name in self.only if name not in self.inits and (name != COMBINATION or not chosen)]
    if unknown:
      raise BenchmarkConfigError(
          f'benchmark.only: no init named {", ".join(map(repr, unknown))} in this workdir; the inits are '
          f'{", ".join(self.inits)}' + (f' and {COMBINATION!r}' if chosen else
                                       f' ({COMBINATION!r} once a run of every init has chosen it)'))
    if self.only:
      self.inits = {k: v for k, v in self.inits.items() if k in self.only or k == 'random'}
    if chosen and (not self.only or COMBINATION in self.only):
      self._add_init(COMBINATION, self.combination['spec'])
    stray = [name for name in self.b.get('retrain', ()) if name not in self.inits]
    if stray:
      raise BenchmarkConfigError(f'benchmark.retrain: {", ".join(map(repr, stray))} not an init of this run; its '
                                 f'inits are {", ".join(self.inits)}')
    given = [name for name in self.b.get('retrain', ()) if not is_config_spec(self.inits[name])]
    if given:
      raise BenchmarkConfigError(f'benchmark.retrain: {", ".join(map(repr, given))} not pretrained here (a random '
                                 'backbone or a given workdir / weights file): its probe and k-NN are made again '
                                 'by themselves when their settings change, its fine-tuning cells with '
                                 'benchmark.retrain_cells; drop it from benchmark.retrain')
    self.ledger = records.Ledger(self.workdir)
    # The inits trained with labels: references, never combined, not self-supervised.
    self.labelled = set(self.b.get('labelled', ()))
    self.errors: dict[str, str] = {}
    self._pictured: tuple[Any, dict[str, list[str]]] = (None, {})
    self._folds: dict[float, int] | None = None   # k-fold subsets: folds per fraction (:meth:`_expected_cells`)

  def _add_init(self, name: str, spec: str) -> None:
    """``name`` before the random init (scratch stays the last row)."""
    scratch = self.inits.pop('random')
    self.inits[name] = spec
    self.inits['random'] = scratch

  def choose_combination(self) -> None:
    """``benchmark.combine``: once every single init is probed, the ``top`` self-supervised ones of best validation
    probe (best layer's val top-1) whose backbones have one shape are joined into one more init, ``combination``,
    pretrained on all their tasks at once (:func:`combination_spec`); the choice is written to
    ``combination.json`` and kept by reruns."""
    from jaxssl.runlog import log  # pylint: disable=import-outside-toplevel
    from jaxssl.train import transfer  # pylint: disable=import-outside-toplevel
    top = int(self.b.combine.top)
    if top < 2 or self.combination is not None or self.only:
      return
    candidates = []
    for init, spec in self.inits.items():
      if (init in self.b.combine.exclude or init in self.labelled or init in self.errors or
          not is_config_spec(spec) or '+' in spec):
        continue
      probe = records.read_json(os.path.join(self.probe_dir(init), 'probe.json'))
      if probe is None:
        return   # not every candidate probed yet (an interrupted run): chosen on the next call
      backbone = transfer.read_backbone(transfer.resolve_checkpoint(self.pretrain_dir(init)))
      signature = tuple(sorted((('/'.join(path), tuple(np.shape(v))) for path, v in backbone.items())))
      candidates.append((init, spec, float(probe['layers'][probe['best_layer']]['val_top1']), signature))
    spec, picked = combination_spec(candidates, top)
    self.combination = {'spec': spec, 'inits': picked, 'top': top,
                        'val_top1': {init: v for init, _, v, _ in candidates},
                        'rule': f'the {top} self-supervised inits of best validation probe (best layer) whose '
                                'backbones have one shape, their tasks trained together'}
    write_json(os.path.join(self.workdir, 'combination.json'), self.combination)
    if not spec:
      log('benchmark: no combination (fewer than two self-supervised inits share a model)')
      return
    log(f"benchmark: combination of {' + '.join(picked)} (best validation probes) -> {spec}")
    self._add_init(COMBINATION, spec)

  def pretrain_dir(self, init: str) -> str:
    return os.path.join(self.workdir, 'pretrain', init)

  def probe_dir(self, init: str) -> str:
    return os.path.join(self.workdir, 'probe', init)

  def backbone(self, init: str) -> str:
    """What the downstream parts start from: the pretext run, the given workdir or weights file, or '' (random)."""
    spec = self.inits[init]
    return self.pretrain_dir(init) if is_config_spec(spec) else spec

  def _exit_unfinished(self, what: str, result: dict[str, Any]) -> None:
    from jaxssl.runlog import log  # pylint: disable=import-outside-toplevel
    from jaxssl.train import loop  # pylint: disable=import-outside-toplevel
    if result['exit_code'] == loop.DIVERGED_EXIT_CODE:
      log(f'benchmark stopped: {what} diverged (see above); change its config and rerun the same command')
    else:
      log(f'benchmark interrupted in {what}; rerun the same command to continue')
    sys.exit(result['exit_code'])

  def set_aside(self, init: str) -> str:
    """Moves ``init``'s pretext run and every part made from it (probe, k-NN, lowshot, fine-tuning cells) with
    their timings into ``stale/<init>-<UTC time>/`` (nothing is deleted), so that they are made again. The
    pretext run moves last: a call stopped midway finds it stale again and moves the rest. (The seconds of
    ``finetune_fraction/*``, summed over inits, keep the moved cells'; ``combination.json``, chosen once, is
    kept.)"""
    return self._move_to_stale(init, self._cells_of(init) + [self.probe_dir(init), self.pretrain_dir(init)],
                               [p for p in self.ledger.seconds if p.split('/', 1)[-1] == init])

  def _cells_of(self, init: str) -> list[str]:
    """``init``'s fine-tuning cells on disk, selection cells included."""
    import re  # pylint: disable=import-outside-toplevel
    mine = re.compile(re.escape(init) + r'_f[^_]+_s\d+(_.*)?$')   # study.cell_name, a selection cell's suffix
    return [path for path in glob.glob(os.path.join(glob.escape(self.workdir), 'finetune', '*', '*'))
            if mine.match(os.path.basename(path))]

  def _move_to_stale(self, name: str, paths: list[str], parts: list[str]) -> str:
    """Moves ``paths`` (in order; those that exist) into ``stale/<name>-<UTC time>/`` at their places under the
    workdir, with the seconds of ``parts``, which the ledger then forgets; returns that folder."""
    import shutil  # pylint: disable=import-outside-toplevel
    dest = os.path.join(self.workdir, 'stale', f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    os.makedirs(dest, exist_ok=True)
    for path in paths:
      if os.path.exists(path):
        rel = os.path.relpath(path, self.workdir)
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.move(path, os.path.join(dest, rel))
    parts = [p for p in parts if p in self.ledger.seconds]
    write_json(os.path.join(dest, 'timings.json'), {p: self.ledger.seconds[p] for p in parts})
    write_json(os.path.join(dest, 'cpu_timings.json'), {p: self.ledger.cpu_seconds.get(p) for p in parts})
    self.ledger.forget(parts)
    return dest

  def _stop_if_asked(self, what: str, result: dict[str, Any]) -> None:
    """A signal that came after a run's last step (its final evaluation) finished that run; the benchmark stops
    before the next part, its results written."""
    from jaxssl.runlog import log  # pylint: disable=import-outside-toplevel
    from jaxssl.train import loop  # pylint: disable=import-outside-toplevel
    if result.get('stop_asked'):
      self.write_results()
      log(f'benchmark stopped after {what} (finished); rerun the same command to continue')
      sys.exit(loop.PREEMPTED_EXIT_CODE)

  def pretrain(self, init: str, n: str) -> None:
    """Part 1: the pretext run of ``init`` (nothing for a random backbone or a given workdir / weights file)."""
    from jaxssl.config_check import check_config  # pylint: disable=import-outside-toplevel
    from jaxssl.runlog import log  # pylint: disable=import-outside-toplevel
    from jaxssl.train import loop  # pylint: disable=import-outside-toplevel
    spec = self.inits[init]
    if not is_config_spec(spec):
      return
    run_dir = self.pretrain_dir(init)
    c = pretrain_config(self.config, spec)
    # Every config the run trained with (config.json, and config.step<N>.json of a resume with another one), a
    # finished run's or one under way: either is stale when any differs from what the benchmark trains now.
    changes = list(dict.fromkeys(
        change for path in sorted(glob.glob(os.path.join(glob.escape(run_dir), 'config*.json')))
        for change in config_changes(records.read_json(path) or {}, c.to_dict())))
    if not changes and os.path.exists(os.path.join(run_dir, 'final_metrics.json')):
      return
    try:   # before anything moves to stale/
      check_config(c)
    except cli.one_line_errors():
      raise
    except ValueError as e:   # the pretext config with the benchmark's keys: one line naming where to set it
      raise BenchmarkConfigError(f'pretrain/{init} ({spec}) with the benchmark\'s settings: {e} (a pretext run\'s '
                                 'key is set with --config.benchmark.pretrain_overrides)') from e
    if changes:
      said = describe_changes(changes)
      if init not in self.b.get('retrain', ()):
        raise BenchmarkConfigError(
            f'pretrain/{init} was trained with another config than the benchmark trains now ({said}): add '
            f'--config.benchmark.retrain="({init!r},)" to move it and every part made from it to stale/ and train '
            'it again, or restore the setting')
      moved = self.set_aside(init)
      log(f'benchmark {n} pretrain {init}: its config changed ({said}); the old run and its parts moved to {moved}')
    log(f'benchmark {n} pretrain {init}: {spec} -> {run_dir}')
    t0 = self.ledger.clock()
    result = loop.train_and_evaluate(c, run_dir)
    self.ledger.add(t0, f'pretrain/{init}')
    if not result['finished']:
      self._exit_unfinished(f'pretraining {init}', result)
    self._stop_if_asked(f'pretraining {init}', result)

  def probe_and_knn(self, init: str, n: str) -> None:
    """Feature extraction (cached), the per-layer probe, the k-NN of the best layer and the lowshot probes; what
    exists is skipped."""
    from jaxssl.eval import cached_probe  # pylint: disable=import-outside-toplevel
    from jaxssl.runlog import log  # pylint: disable=import-outside-toplevel
    out = self.probe_dir(init)
    probe_json, knn_json = os.path.join(out, 'probe.json'), os.path.join(out, 'knn.json')
    lowshot_json = os.path.join(out, 'lowshot.json')
    p = self.b.probe
    features = os.path.join(out, f'features_d{p.max_dim}')   # another pooling size is another cache
    to_make = self._parts_to_make(init)
    if to_make:   # the model first: a lowshot layer misnamed is one line before any record moves
      t0 = self.ledger.clock()   # the model and any extraction count towards the first part that needs them
      exp, state = self._feature_model(init)
      names = list(self._feature_names(exp, state))
      layers = transferred_layers(names, list(p.layers), (exp.init_info or {}).get('not_transferred', []))
      low_layers = self._lowshot_layers(init, names, layers) if self._lowshot_fractions() else []
    for made in self._made_records(init, n):   # the probe first: its move takes the k-NN and lowshot with it
      self._keep_if_same(**made)
    knn_settings, settings = self._knn_settings(), self._lowshot_settings()
    lowshot_done = self._lowshot_done(init, settings)
    if to_make:
      if not os.path.exists(probe_json):
        log(f'benchmark {n} probe {init}: extracting {", ".join(layers)} (pooled to <= {p.max_dim} dims) -> '
            f'{features}')
        info = cached_probe.extract(exp.eval_context(out), state, features, layers, max_dim=p.max_dim,
                                    batch_size=self.config.eval_batch_size)
        write_json(os.path.join(out, 'features.json'),
                   {**info, 'max_dim': p.max_dim, 'backbone': self.backbone(init) or 'random', 'layers': layers,
                    'not_transferred': (exp.init_info or {}).get('not_transferred', []),
                    'settings': self._probe_settings(init)})
        log(f"  features: {info['seconds']:.0f}s, {sum(info['bytes'].values()) / 1e9:.2f} GB cached")
        summary = cached_probe.probe_all(
            features, out, layers, num_classes=exp.info.num_classes, class_names=list(exp.info.class_names),
            val_fraction=self.b.val_fraction, val_seed=self.b.val_seed, l2_grid=tuple(p.l2), epochs=p.epochs,
            batch_size=p.batch_size, lr=p.lr, min_steps=p.min_steps, seed=p.seed)
        self.ledger.add(t0, f'probe/{init}')
        t0 = self.ledger.clock()
        log(f"  best layer on val: {summary['best_layer']}")
      best = records.read_json(probe_json)['best_layer']
      low_layers = [] if lowshot_done else low_layers
      cached_probe.extract(exp.eval_context(out), state, features, list(dict.fromkeys([best, *low_layers])),
                           max_dim=p.max_dim, batch_size=self.config.eval_batch_size)   # there unless removed
      train_idx, val_idx = cached_probe.val_split(cached_probe.load(features, 'train', 'labels'),
                                                  self.b.val_fraction, self.b.val_seed)
      if not os.path.exists(knn_json):
        k = self.b.knn
        r = cached_probe.knn_layer(features, best, train_idx, num_classes=exp.info.num_classes,
                                   class_names=list(exp.info.class_names), k=k.k, temperature=k.temperature)
        write_json(knn_json, {**r, 'settings': knn_settings})
        self.ledger.add(t0, f'knn/{init}')
        t0 = self.ledger.clock()
        log(f"benchmark {n} knn {init}: {best} top1={r['test_top1']:.4f} ({r['seconds']:.0f}s)")
      if not lowshot_done:
        log(f'benchmark {n} lowshot {init}: a probe per fine-tuning subset at {", ".join(low_layers)}, the layer '
            'chosen on the validation images')
        r = {**self._lowshot(features, low_layers, train_idx, val_idx, exp.info), 'settings': settings}
        write_json(lowshot_json, r)
        self.ledger.add(t0, f'lowshot/{init}')
        log(f"benchmark {n} lowshot {init}: " + ', '.join(
            f"{100 * float(f):g}% {100 * np.mean([c['test_top1'] for c in cells.values()]):.1f} "
            f"({tables.layers_text([c['layer'] for c in cells.values()])})" for f, cells in r['fractions'].items()))
    if not p.keep_features:
      cached_probe.remove_cache(features)

  def _probe_settings(self, init: str) -> dict[str, Any]:
    """What ``init``'s cached features and per-layer probe are made with (features.json keeps it): the backbone
    (a pretext run by its place in the workdir, which may move), the images, the validation images, the probe's
    options."""
    spec = self.inits[init]
    return json.loads(json.dumps({   # as it reads back from the file (tuples as lists)
        'backbone': os.path.join('pretrain', init) if is_config_spec(spec) else given_path(spec) or 'random',
        'data': {k: self.config.data.get(k) for k in ('name', 'train_limit', 'eval_limit')},
        'val_fraction': float(self.b.val_fraction), 'val_seed': int(self.b.val_seed),
        'probe': {k: v for k, v in self.b.probe.to_dict().items() if k != 'keep_features'}}))

  def _made_records(self, init: str, n: str = '') -> list[dict[str, Any]]:
    """The records of ``init``'s evaluation parts that keep their settings, for :meth:`_keep_if_same`: the probe
    (features.json, :meth:`_probe_settings`: another backbone for a given workdir or weights file, other images or
    validation images, other probe options; it moves with its k-NN and lowshot), the k-NN (knn.json) and the
    lowshot (lowshot.json, where the part is on; one from before it kept settings used another standardization)."""
    out = self.probe_dir(init)
    knn, lowshot = os.path.join(out, 'knn.json'), os.path.join(out, 'lowshot.json')
    made = [dict(record=os.path.join(out, 'features.json'), wanted=self._probe_settings(init),
                 stale_name=f'probe-{init}', paths=[out], parts=[f'{p}/{init}' for p in ('probe', 'knn', 'lowshot')],
                 what=f'benchmark {n} probe {init}', again='probed again'),
            dict(record=knn, wanted=self._knn_settings(), made_with=records.knn_made_with, stale_name=f'knn-{init}',
                 paths=[knn], parts=[f'knn/{init}'], what=f'benchmark {n} knn {init}', again='measured again')]
    if self._lowshot_settings() is not None:
      made.append(dict(record=lowshot, wanted=self._lowshot_settings(), made_with=records.lowshot_made_with,
                       stale_name=f'lowshot-{init}', paths=[lowshot], parts=[f'lowshot/{init}'],
                       what=f'benchmark {n} lowshot {init}', again='fitted again'))
    return made

  def _keep_if_same(self, record: str, wanted: dict[str, Any], stale_name: str, paths: list[str], parts: list[str],
                    what: str, again: str, made_with=lambda made: {}) -> None:
    """A made part whose ``record`` (a JSON file) kept other ``settings`` than ``wanted`` moves to ``stale/`` (its
    ``paths``, the ``parts``' seconds) and one line says so: it is made again. Only a setting both name decides
    (``made_with(record)`` says what the record's settings do not: one made before its file kept them, or before a
    setting was added to jaxssl): what neither names is taken as made with today's (written into it). Nothing
    made: nothing to do."""
    from jaxssl.runlog import log  # pylint: disable=import-outside-toplevel
    made, wanted, changes = records.settings_changes(record, wanted, made_with)
    if made is None or made.get('settings') == wanted:
      return
    if not changes:
      write_json(record, {**made, 'settings': wanted})
      return
    dest = self._move_to_stale(stale_name, paths, parts)
    log(f'{what}: made with other settings ({describe_changes(changes)}); moved to {dest}, {again}')

  def _knn_settings(self) -> dict[str, Any]:
    """What a knn.json is made with."""
    return {'k': int(self.b.knn.k), 'temperature': float(self.b.knn.temperature)}

  def _lowshot_settings(self) -> dict[str, Any] | None:
    """What a lowshot.json was made with (its subsets, the validation images, the probe's options): another
    setting makes it again; None where the part is off (nothing to make)."""
    if not self._lowshot_fractions():
      return None
    return json.loads(json.dumps({   # as it reads back from the file (tuples as lists)
        'fractions': self._lowshot_fractions(), 'seeds': [int(s) for s in self.b.seeds],
        'layers': [str(name) for name in self.b.get('lowshot_layers', ())],   # [] every probed layer
        'subsets': str(self.b.subsets), 'val_fraction': float(self.b.val_fraction), 'val_seed': int(self.b.val_seed),
        'probe': {k: v for k, v in self.b.probe.to_dict().items() if k != 'keep_features'},
        'standardized_by': 'the training images less the validation images (their features, not labels)'}))

  def _parts_to_make(self, init: str) -> list[str]:
    """``init``'s evaluation parts not made, or made with other settings (made again): ['probe'] (its k-NN and
    lowshot with it), else 'knn' and/or 'lowshot' alone, or none."""
    if init not in self.inits:   # the combination, not chosen yet
      return ['probe']
    def stale(m):   # made with other settings
      return bool(records.settings_changes(m['record'], m['wanted'], m.get('made_with', lambda _: {}))[2])

    probe, knn, *low = self._made_records(init)
    if stale(probe) or not os.path.exists(os.path.join(self.probe_dir(init), 'probe.json')):
      return ['probe']
    return [part for part, made in (('knn', [knn]), ('lowshot', low))
            if any(not os.path.exists(m['record']) or stale(m) for m in made)]

  def _lowshot_layers(self, init: str, names: list[str], probed: list[str]) -> list[str]:
    """The layers the lowshot probe chooses among: those of ``benchmark.lowshot_layers`` (() every one) that
    ``init``'s probe measures; where it measures none of them (jigsaw's stops at pool2), every probed layer. A name
    that is no layer of the backbone (``names``) is one line naming the option."""
    from jaxssl.runlog import log  # pylint: disable=import-outside-toplevel
    wanted = [str(name) for name in self.b.get('lowshot_layers', ())]
    unknown = [name for name in wanted if name not in names]
    if unknown:
      raise BenchmarkConfigError(
          f"benchmark.lowshot_layers: {', '.join(map(repr, unknown))} no layer of {init}'s backbone "
          f"({', '.join(names)}); name some of those, or () for every probed one")
    layers = [name for name in probed if name in wanted] if wanted else list(probed)
    if not layers:
      log(f"benchmark lowshot {init}: its probe measures none of benchmark.lowshot_layers ({', '.join(wanted)}); "
          f"every probed layer instead ({', '.join(probed)})")
    return layers or list(probed)

  def _lowshot_done(self, init: str, settings: dict[str, Any] | None) -> bool:
    """Whether ``init``'s lowshot.json was made with ``settings`` (:meth:`_lowshot_settings`; None: the part is
    off, nothing to make)."""
    return settings is None or \
        (records.read_json(os.path.join(self.probe_dir(init), 'lowshot.json')) or {}).get('settings') == settings

  def _lowshot_fractions(self) -> list[float]:
    """The labelled fractions below 1 the frozen-feature probe is fitted at (none unless ``benchmark.lowshot``)."""
    return sorted(float(f) for f in self.b.fractions if float(f) < 1) if self.b.get('lowshot', False) else []

  def _lowshot(self, features: str, layers: list[str], train_idx, val_idx, info) -> dict[str, Any]:
    """The linear probe fitted on each fine-tuning subset's labels only (the very records of the cells
    ``finetune/cells/<init>_f<fraction>_s<seed>`` train on: :func:`lowshot_indices`) at each of ``layers``; per
    subset the layer, L2 strength and epoch chosen on the validation images, the test split scored once
    (:func:`jaxssl.eval.cached_probe.probe_subsets`)."""
    from jaxssl.data import subsets  # pylint: disable=import-outside-toplevel
    from jaxssl.eval import cached_probe  # pylint: disable=import-outside-toplevel
    p, mode = self.b.probe, str(self.b.subsets)
    labels = cached_probe.load(features, 'train', 'labels')
    cells = {}   # (fraction, seed) -> its subset's indices
    for fraction in self._lowshot_fractions():
      folds = subsets.num_folds(labels[train_idx], fraction) if mode == 'kfold' else None
      for seed in self.b.seeds:
        if folds is None or int(seed) < folds:
          cells[f'{fraction:g}', str(int(seed))] = lowshot_indices(labels, train_idx, fraction, int(seed), mode)
    # Standardized by every training image's features, as the full probe: 50 would give 9,216 dims unstable stats.
    fits = cached_probe.probe_subsets(
        features, layers, cells, val_idx, stats_rows=train_idx, num_classes=info.num_classes,
        class_names=list(info.class_names), l2_grid=tuple(p.l2), epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
        min_steps=p.min_steps, seed=p.seed)
    out: dict[str, Any] = {'layers': list(layers), 'subsets': mode,
                           'fractions': {f'{f:g}': {} for f in self._lowshot_fractions()}}
    for (fraction, seed), r in fits.items():
      out['fractions'][fraction][seed] = r
    return out

  def _feature_model(self, init: str):
    from jaxssl.train.experiment import build_experiment  # pylint: disable=import-outside-toplevel
    c = downstream_config(self.config, self.backbone(init))
    with c.unlocked():
      c.data.train_fraction = 1.0
      c.data.holdout_fraction = 0.0   # every training record: the probe holds the same validation images out itself
    exp = build_experiment(c, load_init=True)
    return exp, exp.state

  @staticmethod
  def _feature_names(exp, state):
    from flax import nnx  # pylint: disable=import-outside-toplevel
    return nnx.merge(exp.graphdef, state.params, state.model_state).backbone.feature_names

  def select_dir(self, init: str, fraction: float, values: tuple) -> str:
    """The selection cell of one combination of ``select.grid``'s values (a tuple, one value per key)."""
    return os.path.join(self.workdir, 'finetune', 'select',
                        f'{study.cell_name(init, fraction, int(self.b.select.seed))}_{choice_name(self.grid, values)}')

  def select_at(self, fraction: float) -> float | None:
    """The fraction whose selection cells choose ``fraction``'s values: itself where in ``select.fractions``, else
    the largest selected one below it, else the smallest; None without a grid or selection fractions."""
    picked = sorted(float(f) for f in self.b.select.fractions)
    if not picked or not self.grid:
      return None
    return max((f for f in picked if f <= fraction), default=picked[0])

  def _selection_scores(self, init: str, fraction: float) -> dict[tuple, float] | None:
    """The validation score of each combination of ``select.grid``'s values (the grid's order) in ``init``'s
    selection cells that choose for ``fraction`` (:meth:`select_at`), -inf for one that diverged; None without a
    grid or selection fractions, or while a selection cell is not done."""
    at = self.select_at(fraction)
    if at is None:
      return None
    scores = {}
    for values in grid_choices(self.grid):
      d = self.select_dir(init, at, values)
      m = records.read_json(os.path.join(d, 'final_metrics.json'))
      if m is None and not os.path.exists(os.path.join(d, DIVERGED)):
        return None
      scores[values] = float('-inf') if m is None else float(m[str(self.b.metric)])   # a diverged value loses
    return scores

  def chosen(self, init: str, fraction: float) -> tuple | None:
    """The combination of ``select.grid``'s values (one per key) the validation images chose for ``init`` at
    ``fraction`` (:meth:`_selection_scores`); None while its selection cells are not all done."""
    scores = self._selection_scores(init, fraction)
    return None if scores is None else max(scores, key=scores.__getitem__)   # the first of equals: the grid's order

  def _all_diverged(self, init: str, fraction: float) -> bool:
    """Whether every selection cell ``init``'s test cells at ``fraction`` take their choice from diverged: that
    choice (the grid's first, :meth:`chosen`) was not a choice."""
    scores = self._selection_scores(init, fraction)
    return scores is not None and all(s == float('-inf') for s in scores.values())

  def _expected_cells(self) -> dict[str, int]:
    """Test cells per init each fraction has when complete: every seed, or with k-fold subsets the seeds below
    the fraction's number of folds (read once from the training labels)."""
    if str(self.b.subsets) != 'kfold':
      return {f'{float(f):g}': len(self.b.seeds) for f in self.b.fractions}
    if self._folds is None:
      from jaxssl.data import datasets, subsets  # pylint: disable=import-outside-toplevel
      base = cell_base(self.config)
      train, _ = subsets.load_sources(datasets.get_dataset(base.data.name, base.data), base.data)
      try:
        self._folds = subsets.fold_plan(train, self.b.fractions, 'kfold', 'benchmark.subsets')[0]
      except ValueError as e:
        raise BenchmarkConfigError(str(e)) from None
    return {f'{float(f):g}': sum(1 for s in self.b.seeds if int(s) < self._folds[float(f)])
            for f in self.b.fractions}

  def _cells(self):
    """The fine-tuning cells not finished, in order (:meth:`finetune`): ``(todo, config_for, selected, steps)``,
    todo as (init, fraction, seed, selection values or None for a test cell, its directory), and the steps each
    directory's config trains."""
    import jax  # pylint: disable=import-outside-toplevel
    from jaxssl.data import datasets, splits, subsets  # pylint: disable=import-outside-toplevel
    base = cell_base(self.config)
    info = datasets.get_dataset(base.data.name, base.data)
    train, _ = subsets.load_sources(info, base.data)   # the training records less the validation images
    mode = str(self.b.subsets)
    sel = self.b.select
    selected = {float(f) for f in sel.fractions} if self.grid else set()
    try:   # a selection fraction outside benchmark.fractions sized as its test cells would be
      folds, sizes = subsets.fold_plan(train, sorted({float(f) for f in self.b.fractions} | selected), mode,
                                       'benchmark.subsets')
    except ValueError as e:
      raise BenchmarkConfigError(str(e)) from None

    def config_for(init, fraction, seed, values, holdout):
      c = study.cell_config(base, self.backbone(init), fraction, seed, len(train), jax.device_count(),
                            subset_size=sizes.get(fraction, 0))
      with c.unlocked():
        if init == 'random':
          merge(c, self.b.scratch_overrides, 'benchmark.scratch_overrides')
        for (key, _), value in zip(self.grid, values or ()):
          set_key(c, key, value, 'benchmark.select.grid')
        if holdout:
          c.data.eval_split = splits.HOLDOUT_SPLIT
      return c

    todo = []   # (init, fraction, seed, selection values or None for a test cell, its directory)
    queued = set()   # (init, selection fraction): a selection fraction outside benchmark.fractions too
    for fraction in sorted(float(f) for f in self.b.fractions):
      for init in self.inits:
        if init in self.errors:
          continue
        at = self.select_at(fraction)
        if at is not None and (init, at) not in queued:
          queued.add((init, at))
          todo += [(init, at, int(sel.seed), v, self.select_dir(init, at, v)) for v in grid_choices(self.grid)]
        todo += [(init, fraction, int(seed), None, self.cell_dir(init, fraction, seed)) for seed in self.b.seeds
                 if mode != 'kfold' or seed < folds[fraction]]
    self._check_cells(todo, config_for)
    todo = [t for t in todo if not any(os.path.exists(os.path.join(t[4], f)) for f in ('final_metrics.json', DIVERGED))]
    return todo, config_for, selected, {t[4]: config_for(*t[:3], None, False).total_steps for t in todo}

  def _check_cells(self, cells, config_for) -> None:
    """Every fine-tuning cell already trained (or under way) must have been trained with the recipe the benchmark
    would use now (its config.json against the cell's config, where the backbone lives aside): a selection cell
    with its grid values, a test cell with the values its selection cells chose (a test cell whose selection is
    not complete on disk cannot be told to have them). Otherwise one line names the change, or, with
    ``benchmark.retrain_cells``, every cell moves to ``stale/finetune-<UTC time>/`` with its seconds and they are
    trained again."""
    from jaxssl.runlog import log  # pylint: disable=import-outside-toplevel
    for init, fraction, seed, value, cell_dir in cells:
      recorded = records.read_json(os.path.join(cell_dir, 'config.json'))
      if recorded is None:
        continue
      chosen, said = value, None
      if value is None and self.select_at(fraction) is not None:
        chosen = self.chosen(init, fraction)
        if chosen is None:   # selection cells run before the test cells that take their choice: one was deleted,
          # or select.grid / fractions / seed changed; what the cell trained with cannot be told to be the choice
          said = (f'its selection at {self.select_at(fraction):g} is not complete on disk: a selection cell was '
                  'deleted, or benchmark.select.grid, select.fractions or select.seed changed')
      if said is None:
        wanted = config_for(init, fraction, seed, chosen, value is not None).to_dict()   # a selection cell: holdout
        # init_from: a pretext run's checkpoint moves with the workdir (a stale run is set aside with its cells);
        # a given workdir or weights file is the init itself, however its path is spelt.
        changes = config_changes(recorded, wanted, CELL_IGNORED_KEYS + ('init_from',))
        spec = self.inits[init]
        if not is_config_spec(spec) and given_path(recorded.get('init_from', '')) != given_path(spec):
          changes.insert(0, ('init_from', recorded.get('init_from', ''), spec))
        if not changes:
          continue
        said = describe_changes(changes)
      if not self.b.get('retrain_cells', False):
        raise BenchmarkConfigError(
            f'{os.path.relpath(cell_dir, self.workdir)} was trained with another recipe than the benchmark uses now '
            f'({said}): add --config.benchmark.retrain_cells=True to move every fine-tuning cell (of this call\'s '
            'inits, with benchmark.only) to stale/ and train them again, or restore the setting')
      if self.only:   # this call's inits' cells only: the others' stay for the calls that run them
        dest = self._move_to_stale('finetune', [d for init in self.inits for d in self._cells_of(init)],
                                   [f'finetune/{init}' for init in self.inits])
      else:
        dest = self._move_to_stale('finetune', [os.path.join(self.workdir, 'finetune')], [
            p for p in self.ledger.seconds if p.startswith(('finetune/', 'finetune_fraction/'))])
      log(f'benchmark: the fine-tuning recipe changed ({said}); every cell of {", ".join(self.inits)} moved to '
          f'{dest}')
      return

  def outlook(self) -> str:
    """One line: the parts left and a rough time for them, at the mean wall time of this workdir's finished
    parts of each kind (its pretext runs, its probe + k-NN + lowshot, a k-NN or a lowshot alone, its fine-tuning
    steps); 'time unknown' for a kind none of whose parts is done yet. A pretext run that will be found stale counts
    as done; a probe made again (other settings) counts with its k-NN and lowshot, a k-NN or lowshot alone as
    itself."""
    live = [init for init in self.inits if init not in self.errors]
    pretext = [init for init in live if is_config_spec(self.inits[init])]
    if self.b.combine.top >= 2 and self.combination is None and not self.only:
      pretext.append(COMBINATION)   # chosen once every init is probed
      live.append(COMBINATION)
    pre_done = [i for i in pretext if os.path.exists(os.path.join(self.pretrain_dir(i), 'final_metrics.json'))]

    left_parts = {init: self._parts_to_make(init) for init in live}
    eval_done = [i for i in live if not left_parts[i]]
    todo, _, selected, steps = self._cells()
    trained_steps, trained_s = 0, sum(v for k, v in self.ledger.seconds.items() if k.startswith('finetune/'))
    for d in glob.glob(os.path.join(self.workdir, 'finetune', '*', '*', 'final_metrics.json')):
      if not os.path.exists(os.path.join(os.path.dirname(d), 'reused.json')):
        trained_steps += int((records.read_json(d) or {}).get('step', 0))

    def mean(parts):
      vals = [sum(self.ledger.seconds.get(f'{p}/{i}', 0.0) for p in parts[1]) for i in parts[0]]
      vals = [v for v in vals if v > 0]
      return sum(vals) / len(vals) if vals else None

    sel = self.b.select   # a test cell on select.seed reuses its selection cell's training: nothing to train
    cell_steps = sum(n for (_, f, seed, value, d), n in zip(todo, steps.values())
                     if not (value is None and f in selected and seed == int(sel.seed)))
    left = [(n, each, what) for n, each, what in (
        (len(pretext) - len(pre_done), mean((pre_done, ('pretrain',))), 'pretext runs'),
        (sum(parts == ['probe'] for parts in left_parts.values()), mean((eval_done, ('probe', 'knn', 'lowshot'))),
         'probes + k-NN + lowshot'),
        *((sum(parts != ['probe'] and part in parts for parts in left_parts.values()), mean((live, (part,))), what)
          for part, what in (('knn', 'k-NN'), ('lowshot', 'lowshot probes'))),   # at their last making's time
        (cell_steps, trained_s / trained_steps if trained_steps else None, f'fine-tuning steps in {len(todo)} cells' +
         (" (and the combination's)" if COMBINATION in pretext and COMBINATION not in self.inits else ''))) if n]
    if not left:
      return 'benchmark: nothing left to do'

    def each(seconds, what):
      if seconds is None:
        return 'time unknown until one is done'
      return f'~{seconds:.2f}s each' if 'steps' in what else f'~{tables.duration(seconds)} each'

    total = sum(n * seconds for n, seconds, _ in left if seconds is not None)
    unknown = any(seconds is None for _, seconds, _ in left)
    summed = ('' if unknown and not total else
              f" -> {'more than ' if unknown else ''}~{tables.duration(total)} at this workdir's past wall time")
    return 'benchmark left: ' + ', '.join(f'{n:,} {what} ({each(seconds, what)})' for n, seconds, what in left) + summed

  def finetune(self) -> None:
    """Every fine-tuning cell not finished, smallest fraction first: for each fraction the selection cells (every
    combination of ``select.grid``'s values on subset ``select.seed``, scored on the validation images), then the
    test cells with the chosen values; a step-based ETA."""
    from jaxssl.runlog import log  # pylint: disable=import-outside-toplevel
    from jaxssl.train import loop  # pylint: disable=import-outside-toplevel
    todo, config_for, selected, steps = self._cells()
    sel = self.b.select
    total_steps, done_steps, t_all = sum(steps.values()), 0, 0.0
    for i, (init, fraction, seed, value, cell_dir) in enumerate(todo):
      reused = None
      if value is None:
        chosen = self.chosen(init, fraction)
        c = config_for(init, fraction, seed, chosen, False)
        if fraction in selected and seed == int(sel.seed) and chosen is not None:
          reused = records.reuse_selection(c, config_for(init, fraction, seed, chosen, True),
                                           self.select_dir(init, fraction, chosen), cell_dir)
      else:
        c = config_for(init, fraction, seed, value, True)
      what = (f'select {os.path.basename(cell_dir)} (on the validation images)' if value is not None else
              f'cell {study.cell_name(init, fraction, seed)}' +
              (f' ({choice_name(self.grid, chosen)}, ' + ('every value diverged on validation: the first)'
                                                           if self._all_diverged(init, fraction) else
                                                           'chosen on validation)') if chosen is not None else ''))
      if reused:
        what += f'; trained as {os.path.basename(reused)}, whose training is reused: the test split scored'
        total_steps -= steps[cell_dir]   # nothing to train: the ETA counts the steps left to train
        steps[cell_dir] = 0
      eta = (f' | ETA {tables.duration(t_all / done_steps * (total_steps - done_steps))}' if done_steps else '')
      log(f'benchmark finetune {i + 1}/{len(todo)}: {what}, {c.total_steps} steps, batch {c.batch_size}{eta}')
      t0 = self.ledger.clock()
      result = loop_train(c, cell_dir)
      seconds = self.ledger.add(t0, f'finetune/{init}', f'finetune_fraction/{fraction:g}')
      if result['exit_code'] == loop.DIVERGED_EXIT_CODE:
        # An outcome of the recipe, not a fault of the run: recorded, and the benchmark goes on. A selection value
        # that diverges loses; a test cell counts as diverged in the results.
        write_json(os.path.join(cell_dir, DIVERGED), {
            'step': int(result.get('diverged_at', result['step'])),
            **dict(zip((key for key, _ in self.grid), value if value is not None else chosen or ())),
            'why': 'a non-finite loss or gradient (the log says where)'})
        log(f"benchmark: {os.path.basename(cell_dir)} diverged at step {result.get('diverged_at', result['step'])}: "
            f'recorded in {DIVERGED} '
            f'({"this value loses the selection" if value is not None else "the results count it as diverged"}); '
            'move the cell\'s directory away to train it again from its start' +
            (" (a selection cell: before its fraction's test cells train, or they are found stale)"
             if value is not None else ''))
      elif not result['finished']:
        self._exit_unfinished(f'fine-tuning {os.path.basename(cell_dir)}', result)
      self._stop_if_asked(f'fine-tuning {os.path.basename(cell_dir)}', result)
      done_steps += steps[cell_dir]
      t_all += seconds
      if i + 1 == len(todo) or todo[i + 1][1] != fraction:
        self.write_results()   # a fraction's column complete for every init

  def cell_dir(self, init: str, fraction: float, seed: int) -> str:
    return os.path.join(self.workdir, 'finetune', 'cells', study.cell_name(init, fraction, seed))

  def _guarded(self, init: str, part, *args) -> None:
    """A backbone that does not fit the downstream model (jigsaw's tile-sized CifarNet) is recorded and skipped;
    every other error stops the benchmark."""
    from jaxssl.train.transfer import TransferError  # pylint: disable=import-outside-toplevel
    try:
      part(init, *args)
    except TransferError as e:
      from jaxssl.runlog import log  # pylint: disable=import-outside-toplevel
      self.errors[init] = ' '.join(str(e).split())
      log(f'benchmark: {init} skipped from here on: {self.errors[init]}')

  def backbone_parts(self, init: str, n: str) -> bool:
    """Parts 1-3 of ``init`` (pretrain, probe, k-NN, lowshot; what is done is skipped), then the results
    rewritten if any was made (or moved, or the init skipped). Returns whether they were."""
    before = (dict(self.ledger.seconds), dict(self.errors))
    self._guarded(init, self.pretrain, n)
    if init not in self.errors:
      self._guarded(init, self.probe_and_knn, n)
    if (self.ledger.seconds, self.errors) == before:
      return False
    self.write_results()
    return True

  def run(self) -> dict[str, Any]:
    from jaxssl.runlog import log  # pylint: disable=import-outside-toplevel
    t0 = time.perf_counter()
    with open(os.path.join(self.workdir, 'calls.jsonl'), 'a', encoding='utf-8') as f:
      f.write(json.dumps(records.provenance()) + '\n')   # results.md says what measured it
    log(self.outlook())
    self.write_results()   # what an earlier call finished after its last write (a stop during training), on record
    names = [name for name in self.inits if name != COMBINATION]
    for i, init in enumerate(names):
      if self.backbone_parts(init, f'[{i + 1}/{len(names)}]'):   # some part of it was made: the outlook has moved
        log(self.outlook())
    self.choose_combination()
    if COMBINATION in self.inits:
      self.backbone_parts(COMBINATION, f'[{len(names) + 1}/{len(names) + 1}]')
      log(self.outlook())
    self.finetune()
    results = self.write_results()
    log(f'benchmark done ({tables.duration(time.perf_counter() - t0)} in this call) -> '
        f"{os.path.join(self.workdir, 'results.md')}")
    return results

  # ---------------------------------------------------------------------------------------------- results

  def collect(self) -> dict[str, Any]:
    """Everything on disk, per init: pretext figures, per-layer probe, k-NN, fine-tuning cells; the timings."""
    metric = str(self.b.metric)
    rows, cells = [], []
    for init in self.inits:
      probe = records.read_json(os.path.join(self.probe_dir(init), 'probe.json'))
      knn = records.read_json(os.path.join(self.probe_dir(init), 'knn.json'))
      pretext = records.read_json(os.path.join(self.pretrain_dir(init), 'final_metrics.json')) or {}
      row = {'init': init, 'source': self.inits[init] or 'random',
             'pretext': {k: v for k, v in pretext.items() if isinstance(v, (int, float))},
             'probe_layers': {l: r['test_top1'] for l, r in probe['layers'].items()} if probe else {},
             'probe_layers_val': {l: r['val_top1'] for l, r in probe['layers'].items()} if probe else {},
             'best_layer': probe['best_layer'] if probe else None,
             'probe_top1': probe['layers'][probe['best_layer']]['test_top1'] if probe else None,
             'knn_top1': knn['test_top1'] if knn else None, 'finetune': {},
             'wall_s': {part: self.ledger.seconds.get(f'{part}/{init}') for part in
                        ('pretrain', 'probe', 'knn', 'lowshot', 'finetune')}}
      lowshot = records.read_json(os.path.join(self.probe_dir(init), 'lowshot.json'))
      row['lowshot'] = {f: {**tables.mean_std([c['test_top1'] for c in per_seed.values()]),
                            'layers': [c.get('layer') for c in per_seed.values()]}   # chosen per subset on val
                        for f, per_seed in (lowshot or {}).get('fractions', {}).items() if per_seed}
      for f, c in row['lowshot'].items():   # one from before the layer was chosen per subset: its one layer
        c['layers'] = [name or lowshot.get('layer') for name in c['layers']]
      if init in self.errors:
        row['error'] = self.errors[init]
      row['chosen'] = {f'{f:g}': self.chosen(init, float(f)) for f in sorted(self.b.fractions)}
      row['select_val'] = {}   # '<fraction>/<values>': the selection cell's validation score
      for f in self.b.select.fractions:
        for values in grid_choices(self.grid):
          m = records.read_json(os.path.join(self.select_dir(init, float(f), values), 'final_metrics.json'))
          if m is not None:
            row['select_val'][f'{float(f):g}/{choice_label(values)}'] = float(m[metric])
          elif os.path.exists(os.path.join(self.select_dir(init, float(f), values), DIVERGED)):
            row.setdefault('select_diverged', []).append(f'{float(f):g}/{choice_label(values)}')
      row['chosen_all_diverged'] = [f'{f:g}' for f in sorted(self.b.fractions) if self._all_diverged(init, float(f))]
      for fraction in sorted(self.b.fractions):
        vals, diverged = [], 0
        for seed in self.b.seeds:
          m = records.read_json(os.path.join(self.cell_dir(init, fraction, seed), 'final_metrics.json'))
          if m is not None:
            vals.append(float(m[metric]))
            cells.append({'init': init, 'fraction': float(fraction), 'seed': int(seed), metric: float(m[metric])})
          elif os.path.exists(os.path.join(self.cell_dir(init, fraction, seed), DIVERGED)):
            diverged += 1
            cells.append({'init': init, 'fraction': float(fraction), 'seed': int(seed), 'diverged': True})
        if vals or diverged:
          row['finetune'][f'{fraction:g}'] = {**(tables.mean_std(vals) if vals else
                                                 {'mean': float('nan'), 'std': 0.0, 'n': 0}), 'diverged': diverged}
      rows.append(row)
    return {'metric': metric, 'fractions': [float(f) for f in sorted(self.b.fractions)],
            'seeds': [int(s) for s in self.b.seeds], 'subsets': str(self.b.subsets), 'inits': rows, 'cells': cells,
            'expected_cells': self._expected_cells(),
            'combination': self.combination, 'timings_s': dict(self.ledger.seconds),
            'cpu_timings_s': dict(self.ledger.cpu_seconds),
            'total_wall_s': sum(v for k, v in self.ledger.seconds.items() if not k.startswith('finetune_fraction/')),
            'total_cpu_s': sum(v for k, v in self.ledger.cpu_seconds.items()
                               if v is not None and not k.startswith('finetune_fraction/')),
            'calls': records.read_jsonl(os.path.join(self.workdir, 'calls.jsonl')),
            'written': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
            'protocol': {'probe': self.b.probe.to_dict(), 'knn': self.b.knn.to_dict(),
                         'labelled': sorted(self.labelled), 'only': list(self.only),
                         'targets': self.b.targets.to_dict() if 'targets' in self.b else {},
                         'val_fraction': float(self.b.val_fraction), 'val_seed': int(self.b.val_seed),
                         'select': self.b.select.to_dict(),
                         'scratch_overrides': self.b.scratch_overrides.to_dict(),
                         'epochs': float(self.b.epochs), 'min_steps': int(self.b.min_steps)}}

  def write_results(self) -> dict[str, Any]:
    """results.json / .csv / .md and the two plots, from what is on disk now (so partial results show too)."""
    r = self.collect()
    r['targets'] = tables.check_targets(r)
    write_json(os.path.join(self.workdir, 'results.json'), r)
    write_text(os.path.join(self.workdir, 'results.csv'), tables.csv_text(r))
    write_text(os.path.join(self.workdir, 'results.md'), tables.markdown(r))
    self.plots(r)
    return r

  def trained_backbones(self) -> dict[str, str]:
    """Init -> the run directory of its finished backbone (its pretext run, or a given workdir with a checkpoint)."""
    from jaxssl.train import transfer  # pylint: disable=import-outside-toplevel
    out = {}
    for init, spec in self.inits.items():
      run = self.backbone(init)
      if not run or not os.path.isdir(run) or not transfer.has_checkpoint(run):
        continue
      if is_config_spec(spec) and not os.path.exists(os.path.join(run, 'final_metrics.json')):
        continue   # a pretext run still under way: its filters are not the init's
      out[init] = run
    return out

  def pretext_curves(self) -> list[tuple[str, str]]:
    """pretext_curves.png (:func:`jaxssl.benchmark_figures.pretext_curves`) of every pretext run; returns (init,
    metric) of each panel."""
    runs = [(init, self.pretrain_dir(init), self._tasks(spec)) for init, spec in self.inits.items()
            if is_config_spec(spec)]
    return figures.pretext_curves(runs, os.path.join(self.workdir, 'pretext_curves.png'))

  @staticmethod
  def _tasks(spec: str) -> list[str]:
    try:
      return list(load_config(spec).tasks)
    except Exception:  # pylint: disable=broad-exception-caught  # a picture never stops the benchmark
      return []

  def plots(self, r: dict[str, Any]) -> dict[str, list[str]]:
    """Every picture (jaxssl/benchmark_figures.py); filters.png and reconstructions.png are redrawn when a backbone
    is done, not after every cell. Returns what those two show."""
    figures.probe_layers(r, os.path.join(self.workdir, 'probe_layers.png'))
    figures.label_efficiency(r, os.path.join(self.workdir, 'label_efficiency.png'))
    figures.gain_over_scratch(r, os.path.join(self.workdir, 'gain_over_scratch.png'))
    self.pretext_curves()
    backbones = self.trained_backbones()
    drawn = [(init, os.path.join(run, 'reconstructions.png')) for init, run in backbones.items()]
    drawn = [(init, path) for init, path in drawn if os.path.exists(path)]
    if (backbones, drawn) != self._pictured[0]:
      shown = {'filters': figures.filters(backbones, os.path.join(self.workdir, 'filters.png')),
               'reconstructions': [init for init, _ in drawn]}
      figures.reconstructions(drawn, self.workdir, os.path.join(self.workdir, 'reconstructions.png'))
      self._pictured = ((backbones, drawn), shown)
    return self._pictured[1]


# ------------------------------------------------------------------------------------------------ command


def run_benchmark(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  return Benchmark(config, workdir).run()


def run():
  cli.run_config_command('Benchmark', 'configs/fmnist_benchmark.py[:quick|:resnet18_cifar]',
                         'Benchmark directory (rerun to resume): pretrain/, probe/, finetune/, stale/ (what a changed '
                         'setting set aside), results.md/.csv/.json, the plots, timings.json, cpu_timings.json, '
                         'calls.jsonl, combination.json.', run_benchmark, BenchmarkConfigError)


if __name__ == '__main__':
  run()
