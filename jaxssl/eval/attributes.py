"""The category and attribute model after training: the attribute decision threshold chosen on the validation split, the
test metrics at that threshold, and ``--mode=predict``'s submission files.

Threshold. The model's attribute probabilities on ``multitask.threshold_split`` (default ``val``) are gathered
and the global threshold maximizing ``multitask.threshold_metric`` (default ``mean_sample_f1``, the
competition's score) is chosen from 0.02, 0.03, ..., 0.98; with ``multitask.per_attribute_threshold`` each
attribute also gets the threshold maximizing its own F1 (the global one where the split has no positive of
it). The choice is saved as ``<workdir>/thresholds.json`` with the checkpoint step it belongs to;
``multitask.decision='group_argmax'`` instead takes the most probable attribute of every group (only for
layouts whose groups are mutually exclusive, such as the attribute-challenge sample).

Report (end of training and ``--mode=eval``): on ``multitask.report_split`` (default ``test``) macro F1, the
mean-sample F1 (competition), micro F1, per-attribute F1 (by name, in ``attributes_<split>_step<N>.json``),
DeepFashion top-3/5 recall and category top-1/3/5; the definitions are in jaxssl/tasks/attribute_metrics.py.

Predictions (``--mode=predict``, jaxssl/modes.py): ``<workdir>/predictions/category.csv`` with the header
``file_path,category_label`` and ``<workdir>/predictions/attribute.csv`` with ``file_path,attribute_label``,
one row per image of ``multitask.predict_split`` (default ``test``) in dataset order. File paths are those of
the annotation files. Category labels are numbered as the dataset's own files number them (the benchmark's
list_category_img.txt: 1-based; CSV folders: 0-based); attribute labels are 0-based attribute indices (the
attribute-challenge sample's convention; for the benchmark, the line of list_attr_cloth.txt minus 3), in
increasing order, separated by spaces, empty when none is predicted. A dataset without categories gets no
category.csv.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxssl import files
from jaxssl.data import sources
from jaxssl.eval.base import Evaluator
from jaxssl.runlog import log, write_json
from jaxssl.tasks import attribute_metrics as am

DECISIONS = ('threshold', 'group_argmax')
DEFAULTS = {'threshold_split': 'val', 'threshold_metric': 'mean_sample_f1', 'per_attribute_threshold': False,
            'decision': 'threshold', 'report_split': 'test', 'predict_split': 'test'}
THRESHOLDS_FILE = 'thresholds.json'
ATTRIBUTE_KINDS = ('category_attributes', 'multitask')  # the task kinds --mode=predict serves


def options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return {**DEFAULTS, **dict(config.multitask)}


def check_options(config: ml_collections.ConfigDict) -> None:
  """Part of the config check: a bad choice is one line before anything runs."""
  opts = options(config)
  unknown = set(opts) - set(DEFAULTS)
  if unknown:
    raise ValueError(f'config.multitask has no option(s) {sorted(unknown)}; its options are: {sorted(DEFAULTS)}')
  if opts['decision'] not in DECISIONS:
    raise ValueError(f"unknown multitask.decision '{opts['decision']}'; choose one of: {', '.join(DECISIONS)} "
                     '(set --config.multitask.decision)')
  if config.mode == 'predict' and not any(cfg.get('kind', name) in ATTRIBUTE_KINDS
                                                 for name, cfg in config.tasks.items()):
    raise ValueError("--mode=predict writes DeepFashion submission files and needs a task of kind "
                     "'category_attributes' (or 'multitask'); use configs/deepfashion_multitask.py")
  if opts['threshold_metric'] not in am.THRESHOLD_METRICS:
    raise ValueError(f"unknown multitask.threshold_metric '{opts['threshold_metric']}'; choose one of: "
                     f"{', '.join(am.THRESHOLD_METRICS)} (set --config.multitask.threshold_metric)")


def attribute_task(tasks):
  """The run's task that predicts attributes (it asks for the 'attributes' evaluator), or None."""
  return next((t for t in tasks if 'attributes' in t.evaluators()), None)


# ------------------------------------------------------------------------------------------------ outputs


def make_output_fn(ctx, task):
  """Compiled (state, batch) -> attribute probabilities (and category logits), per example."""

  def outputs(model, batch):
    out = task.forward(model.backbone, model.heads[task.name], batch[task.name], train=False, rng=None)
    return {'attribute_probs': jax.nn.sigmoid(out['attributes']), **({'category_logits': out['category']}
                                                                      if 'category' in out else {})}

  return ctx.compile(outputs, per_example=True)


def _labels(batch) -> dict[str, Any]:
  b = batch
  return {'category': jax.numpy.where(b['category_weight'] > 0, b['category'], -1), 'attributes': b['attributes'],
          'has_attributes': b['attribute_weight'] > 0, 'index': b['index']}


def gather(ctx, state, source, task, output_fn=None) -> dict[str, np.ndarray]:
  """The model's outputs and the labels of every record of ``source``, in record order (padding dropped).

  ``category`` is -1 where a record has none; ``has_attributes`` is False where its split carries no attribute
  labels; ``index`` is each record's ``index`` field (its position in the prepared split).
  """
  got = ctx.gather(output_fn or make_output_fn(ctx, task), state, ctx.batches(source, tasks=[task]),
                   keep=lambda b: b[task.name]['weight'] > 0, fields=lambda b: _labels(b[task.name]))
  order = np.argsort(got['index'], kind='stable')  # processes interleave their slices: back to record order
  return {k: v[order] for k, v in got.items()}


def describe(thresholds: dict[str, Any]) -> str:
  if thresholds['decision'] == 'group_argmax':
    return 'decision: the most probable attribute of each group'
  where = f"chosen on {thresholds['split']} for {thresholds['metric']}" if thresholds['split'] else 'default'
  if thresholds.get('per_attribute') is not None:
    return f"per-attribute thresholds {where} (global {thresholds['threshold']:.2f})"
  return f"threshold {thresholds['threshold']:.2f} ({where})"


def decide(probs: np.ndarray, thresholds: dict[str, Any], groups) -> np.ndarray:
  """0/1 attribute decisions [N, A] under a saved threshold record (see :func:`choose_thresholds`)."""
  if thresholds['decision'] == 'group_argmax':
    return np.asarray(am.group_argmax_decision(probs, groups), np.uint8)
  t = thresholds['per_attribute'] if thresholds.get('per_attribute') is not None else thresholds['threshold']
  return np.asarray(am.threshold_decision(probs, np.asarray(t, np.float32)), np.uint8)


# --------------------------------------------------------------------------------------------- thresholds


def choose_thresholds(exp, state, task, step: int, output_fn=None) -> dict[str, Any]:
  """The attribute decision rule's record: thresholds chosen on the threshold split, else 0.5 and why."""
  opts = options(exp.config)
  record = {'step': int(step), 'decision': opts['decision'], 'metric': opts['threshold_metric'],
            'split': opts['threshold_split'], 'threshold': 0.5, 'per_attribute': None, 'score': None}
  if opts['decision'] == 'group_argmax':
    if not exp.info.exclusive_groups:
      raise ValueError(f"multitask.decision='group_argmax' needs mutually exclusive attribute groups; dataset "
                       f"'{exp.info.name}' has none: use multitask.decision='threshold'")
    return record
  if opts['threshold_split'] not in exp.info.splits:
    log(f"note: dataset '{exp.info.name}' has no split '{opts['threshold_split']}' to choose the attribute "
        'threshold on; using 0.5')
    record['split'] = None
    return record
  g = gather(exp, state, exp.source(opts['threshold_split']), task,
             output_fn)
  labelled = g['has_attributes']
  if not labelled.any():
    log(f"note: split '{opts['threshold_split']}' has no attribute labels to choose the threshold on; using 0.5")
    record['split'] = None
    return record
  probs, true = g['attribute_probs'][labelled], g['attributes'][labelled]
  record['threshold'], record['score'] = am.best_threshold(probs, true, opts['threshold_metric'])
  if opts['per_attribute_threshold']:
    record['per_attribute'] = am.best_attribute_thresholds(probs, true, record['threshold']).tolist()
  return record


def save_thresholds(workdir: str, record: dict[str, Any]) -> str:
  path = files.join(workdir, THRESHOLDS_FILE)
  if jax.process_index() == 0:
    write_json(path, record)
  return path


def saved_thresholds(workdir: str, step: int, decision: str) -> dict[str, Any] | None:
  """The record saved for this checkpoint step and decision rule, if any."""
  path = files.join(workdir, THRESHOLDS_FILE)
  if not files.exists(path):
    return None
  record = json.loads(files.read_text(path))
  return record if record.get('step') == step and record.get('decision') == decision else None


# ------------------------------------------------------------------------------------------------- report


def _clean(x: float) -> float | None:
  return None if x is None or math.isnan(x) else float(x)


def score(g: dict[str, np.ndarray], thresholds: dict[str, Any], info) -> dict[str, Any]:
  """Every attribute and category metric of gathered outputs at a threshold record."""
  out: dict[str, Any] = {}
  labelled = g['has_attributes']
  if labelled.any():
    probs, true = g['attribute_probs'][labelled], g['attributes'][labelled]
    pred = decide(probs, thresholds, info.attribute_groups)
    half = np.asarray(am.threshold_decision(probs, 0.5))
    out.update({'macro_f1': float(am.macro_f1(pred, true)),
                'mean_sample_f1': float(am.mean_sample_f1(pred, true)),
                'micro_f1': float(am.micro_f1(pred, true)),
                'macro_f1@0.5': float(am.macro_f1(half, true)),
                'mean_sample_f1@0.5': float(am.mean_sample_f1(half, true))})
    for k in (3, 5):
      out[f'top{k}_recall'] = float(am.topk_recall(probs, true, k))
      out[f'top{k}_recall_micro'] = float(am.topk_recall_micro(probs, true, k))
    out['attribute_count'] = int(labelled.sum())
    out['per_attribute_f1'] = dict(zip(info.attribute_names,
                                       map(_clean, np.asarray(am.per_attribute_f1(pred, true)).tolist())))
  if 'category_logits' in g and (g['category'] >= 0).any():
    known = g['category'] >= 0
    for k in (1, 3, 5):
      out[f'category_top{k}'] = float(am.category_topk(g['category_logits'][known], g['category'][known], k))
    out['category_count'] = int(known.sum())
  return out


@dataclasses.dataclass
class Attributes(Evaluator):
  """The attribute task's report (end of training and ``--mode=eval``): chooses and saves the threshold
  (``thresholds.json``), scores ``multitask.report_split`` and writes ``attributes_<split>_step<N>.json``;
  returns the scalar metrics as ``<task>/<split>/<metric>`` (merged into final_metrics.json)."""

  def __post_init__(self):
    self._task = attribute_task(self.ctx.tasks)
    # One compiled function for both splits and every evaluation.
    self._outputs = make_output_fn(self.ctx, self._task) if self._task is not None else None

  def run(self, state, phase: str) -> dict[str, Any]:
    exp, workdir, task, output_fn = self.ctx, self.ctx.workdir, self._task, self._outputs
    if task is None:
      return {}
    step, opts = int(state.step), options(exp.config)
    thresholds = choose_thresholds(exp, state, task, step, output_fn)
    save_thresholds(workdir, thresholds)
    split = opts['report_split']
    if split not in exp.info.splits:
      log(f"note: dataset '{exp.info.name}' has no split '{split}' to report attribute metrics on")
      return {f'{task.name}/threshold': thresholds['threshold']}
    result = score(gather(exp, state, exp.source(split), task, output_fn), thresholds, exp.info)
    result = {'step': step, 'split': split, 'thresholds': thresholds, **result}
    if jax.process_index() == 0:
      write_json(files.join(workdir, f'attributes_{split}_step{step}.json'), result)
    scalars = {k: v for k, v in result.items() if isinstance(v, float)}
    log(f'{task.name} on {split} @ {step}, {describe(thresholds)}: '
        + ', '.join(f'{k}={v:.4f}' for k, v in scalars.items()))
    return {f'{task.name}/threshold': thresholds['threshold'],
            **{f'{task.name}/{split}/{k}': v for k, v in scalars.items()}}


# ------------------------------------------------------------------------------------------------ predict


def file_paths(source, count: int) -> list[str]:
  """The ``file_path`` of records 0..count-1 (reading them again: text never travels with the batches)."""
  paths = []
  for start in range(0, count, 1024):
    for i, r in enumerate(sources.read_records(source, range(start, min(count, start + 1024))), start=start):
      if int(r['index']) != i:
        raise ValueError(f'record {i} has index {r["index"]}: predictions need a whole prepared split, not a subset')
      p = r['file_path']
      paths.append(p.decode('utf-8') if isinstance(p, bytes) else str(p))
  return paths


def write_predictions(directory: str, paths, category_labels, attribute_decisions) -> dict[str, str]:
  """The two submission files, each written whole (:func:`jaxssl.files.write_text`); ``category_labels`` None writes
  only attribute.csv."""
  files.makedirs(directory)
  written = {}
  if category_labels is not None:
    written['category'] = files.join(directory, 'category.csv')
    files.write_text(written['category'], _csv(['file_path', 'category_label'],
                                               zip(paths, (int(c) for c in category_labels))))
  written['attribute'] = files.join(directory, 'attribute.csv')
  files.write_text(written['attribute'], _csv(
      ['file_path', 'attribute_label'],
      ((p, ' '.join(str(a) for a in np.flatnonzero(row))) for p, row in zip(paths, attribute_decisions))))
  return written


def _csv(header, rows) -> str:
  buf = io.StringIO(newline='')
  w = csv.writer(buf)
  w.writerow(header)
  w.writerows(rows)
  return buf.getvalue()
