"""The ``--mode`` runners besides training: ``eval``, ``knn`` and ``predict``. Each restores a model with
:func:`restore_for_mode` and hands it to evaluators (jaxssl/eval).

They take no workdir lock (jaxssl/train/lock.py): they read only committed checkpoints, so they may run beside
the training run they evaluate; an unreadable latest checkpoint gives way to the newest readable one, left where
it is. Their results are written whole (a temporary file renamed into place) once computed, and logged first,
so a full or read-only disk loses no number."""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxssl import files, sharding
from jaxssl.eval import attributes, embedding
from jaxssl.eval.base import build_evaluators, run_phase
from jaxssl.eval.knn import Knn
from jaxssl.runlog import log, write_json, writing
from jaxssl.train import checkpoint as ckpt_lib, transfer
from jaxssl.train.checkpoint import Checkpointer
from jaxssl.train.experiment import Experiment, build_experiment
from jaxssl.train.loop import fmt


def restore_for_mode(config: ml_collections.ConfigDict, workdir: str, mode: str, *,
                     allow_init_from: bool = False) -> tuple[Experiment, Any, dict[str, Any]]:
  """(experiment, state, origin) for a mode that reads a trained model: ``workdir``'s checkpoint of step
  ``config.eval_step`` (-1: the latest), or with ``allow_init_from`` and ``config.init_from`` set, that run's
  backbone. ``origin`` names the checkpoint the state came from."""
  if allow_init_from and config.init_from:
    exp = build_experiment(config, load_init=True)
    return exp, exp.state, exp.init_info
  if not transfer.has_checkpoint(workdir):
    also = ' or set --config.init_from=<trained workdir>' if allow_init_from else ''
    raise FileNotFoundError(f'--mode={mode} needs a trained model: no checkpoints in {workdir}; point --workdir '
                            f'at a trained run (train first with the same --workdir){also}')
  exp = build_experiment(config, load_init=False)
  ckpt = Checkpointer(files.join(workdir, 'checkpoints'), read_only=True)
  try:
    want = None if config.eval_step < 0 else config.eval_step
    state, _ = ckpt.restore(want, exp.state, sharding.replicated(exp.mesh))
  except ckpt_lib.StateMismatchError as e:
    raise ckpt_lib.config_mismatch(e, workdir, config) from None
  finally:
    ckpt.close()
  return exp, state, {'checkpoint': files.join(ckpt.directory, str(int(state.step)))}


def _check_writable(workdir: str) -> None:
  """A workdir the results cannot be written to is one line now, not after minutes of evaluation."""
  if jax.process_index() == 0:
    with writing(workdir, workdir):
      probe = files.join(workdir, f'.jaxssl-write-test-{os.getpid()}')
      try:
        files.write_bytes(probe, b'')
        files.remove(probe)
      except OSError as e:  # named as the workdir: the probe is ours, not the user's
        raise OSError(e.errno, e.strerror, workdir) from e


def _write_json(path: str, result: dict[str, Any]) -> None:
  if jax.process_index() == 0:
    write_json(path, result)


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """``--mode=eval``: restore a checkpoint and run the evaluators of the ``checkpoint`` phase on
  ``data.eval_split``; writes ``eval_<split>_step<N>.json``."""
  exp, state, _ = restore_for_mode(config, workdir, 'eval')
  _check_writable(workdir)
  t0 = time.perf_counter()
  step = int(state.step)
  with writing(workdir, workdir):  # evaluators may draw pictures into the workdir
    metrics = run_phase(build_evaluators(exp.eval_context(workdir)), state, 'checkpoint')
  result = {'step': step, 'split': config.data.eval_split, **metrics}
  path = files.join(workdir, f'eval_{config.data.eval_split}_step{step}.json')
  log(f'eval {config.data.eval_split} @ step {step} ({time.perf_counter() - t0:.1f}s): {fmt(metrics)} -> {path}')
  _write_json(path, result)
  return result


def evaluate_knn(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """``--mode=knn``: the backbone of ``config.init_from`` (or this workdir's latest checkpoint), kNN-classifies
  ``data.eval_split`` from ``data.train_split`` with the options of ``config.knn``; writes
  ``knn_<split>.json`` and ``embedding.png|csv`` (PCA of the features of the first 2,000 eval images)."""
  with writing(workdir, workdir):
    files.makedirs(workdir)
  exp, state, origin = restore_for_mode(config, workdir, 'knn', allow_init_from=True)
  _check_writable(workdir)
  kcfg = config.knn
  probe = Knn(exp.eval_context(workdir), k=kcfg.k, temperature=kcfg.temperature, feature=kcfg.feature,
              pool=kcfg.pool, batch_size=kcfg.batch_size)
  t0 = time.perf_counter()
  r = probe.result(state)
  feats, labels = r.pop('_features'), r.pop('_labels')
  result = {'split': config.data.eval_split, 'train_split': config.data.train_split,
            **{k: r[k] for k in ('feature', 'pool', 'dim', 'k', 'temperature', 'train_count')},
            'backbone': origin, 'dataset': config.data.name, 'model': config.model.name,
            **{k: r[k] for k in ('top1', 'top5', 'per_class_top1', 'count')}}
  path = files.join(workdir, f'knn_{config.data.eval_split}.json')
  log(f"knn {r['feature']}/{r['pool']} k={r['k']} on {config.data.eval_split} "
      f"({time.perf_counter() - t0:.1f}s): top1={r['top1']:.4f} top5={r['top5']:.4f} -> {path}")
  _write_json(path, result)
  with writing(workdir, workdir):
    embedding.embedding_for_run(feats, labels, exp.info.class_names, workdir, f"{r['feature']}/{r['pool']}",
                                config.data.eval_split)
  return result


def predict_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """``--mode=predict``: restore a checkpoint (``config.eval_step``, -1 = latest), decide with its saved
  threshold (chosen on the validation split now if none was saved for that step) and write the DeepFashion
  submission files for ``multitask.predict_split`` (see jaxssl/eval/attributes.py). Returns what was written
  and the gathered outputs it came from."""
  exp, state, _ = restore_for_mode(config, workdir, 'predict')
  _check_writable(workdir)
  task = attributes.attribute_task(exp.tasks)
  if task is None:
    raise ValueError("--mode=predict needs a task of kind 'category_attributes' (configs/deepfashion_multitask.py)")
  ctx = exp.eval_context(workdir)
  step, opts = int(state.step), attributes.options(config)
  output_fn = attributes.make_output_fn(ctx, task)
  thresholds = attributes.saved_thresholds(workdir, step, opts['decision'])
  if thresholds is None:
    thresholds = attributes.choose_thresholds(ctx, state, task, step, output_fn)
    with writing(workdir, workdir):
      attributes.save_thresholds(workdir, thresholds)
  split = opts['predict_split']
  source = ctx.source(split, limit=0)
  g = attributes.gather(ctx, state, source, task, output_fn)
  paths = attributes.file_paths(source, len(g['index']))
  categories = (np.argmax(g['category_logits'], axis=1) + exp.info.category_base
                if 'category_logits' in g else None)
  written = {}
  if jax.process_index() == 0:
    with writing(workdir, workdir):
      written = attributes.write_predictions(files.join(workdir, 'predictions'), paths, categories,
                                             attributes.decide(g['attribute_probs'], thresholds,
                                                               exp.info.attribute_groups))
    log(f"predicted {len(paths)} {split} images at step {step} ({attributes.describe(thresholds)}) -> "
        f"{', '.join(written.values())}")
  return {'step': step, 'split': split, 'count': len(paths), 'thresholds': thresholds, 'files': written,
          'outputs': g, 'file_paths': paths}


RUNNERS = {'eval': evaluate_checkpoint, 'knn': evaluate_knn, 'predict': predict_checkpoint}
