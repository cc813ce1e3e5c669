"""The k-NN half of the online probe (jaxssl/tasks/online_probe.py): at every evaluation, a weighted k-NN vote of
the eval split among the training split's features of the layer the probe reads.

It is what the ``knn`` evaluator (jaxssl/eval/knn.py) computes, Wu et al. 2018's protocol (L2-normalized
features, the k most cosine-similar training images vote with weight exp(similarity / T)), with the probe's
options and the probe's own view of an image: the same layer, tiles where the probe cuts them (a backbone built
for jigsaw tiles cannot take whole images), and the probe's labels (``category`` on DeepFashion, images without
one left out). The online probe asks for it (``Task.evaluators``) when its ``knn`` option is on, so one switch,
``config.online_probe``, gives both curves: ``probe/top1`` (the linear probe) and ``probe/knn_top1`` here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax.numpy as jnp

from jaxssl.data.sources import IndexedSubset
from jaxssl.eval.base import Evaluator
from jaxssl.eval.knn import accuracy_report, knn_predict
from jaxssl.tasks.online_probe import OnlineProbe, label_key


@dataclasses.dataclass
class OnlineKnn(Evaluator):
  """``<probe>/knn_top1`` and ``<probe>/knn_top5`` of every online probe with ``knn`` on."""
  at: tuple[str, ...] = ('eval', 'final', 'checkpoint')
  batch_size: int = 0          # 0 = the run's eval_batch_size
  logged: ClassVar[bool] = True

  def __post_init__(self):
    self._probes = [t for t in self.ctx.tasks if isinstance(t, OnlineProbe) and t.knn]
    self._fns = {t.name: self._compile(t) for t in self._probes}

  def _compile(self, probe: OnlineProbe):
    def features(model, batch):
      h = probe.embed(model.backbone, batch['image'], probe.knn_pool)
      return {'features': h / jnp.maximum(jnp.linalg.norm(h, axis=-1, keepdims=True), 1e-12)}
    return self.ctx.compile(features, per_example=True)

  def _features(self, probe: OnlineProbe, state, source):
    """(L2-normalized features, labels) of the records of ``source`` that have a label, in record order."""
    def labels(batch):
      return batch[label_key(batch, probe.label_key)]
    got = self.ctx.gather(self._fns[probe.name], state,
                          self.ctx.batches(source, tasks=None, batch_size=self.batch_size or None),
                          keep=lambda b: (b['weight'] > 0) & (labels(b) >= 0), fields=lambda b: {'label': labels(b)})
    return got['features'], got['label']

  def run(self, state, phase: str) -> dict[str, Any]:
    out = {}
    for probe in self._probes:
      train = self.ctx.train_source
      if probe.knn_train_limit:
        train = IndexedSubset(train, range(min(int(probe.knn_train_limit), len(train))))
      train_f, train_y = self._features(probe, state, train)
      test_f, test_y = self._features(probe, state, self.ctx.eval_source)
      scores = knn_predict(train_f, train_y, test_f, int(probe.knn_k), float(probe.knn_temperature),
                           self.ctx.info.num_classes)
      report = accuracy_report(scores, test_y, self.ctx.info.class_names)
      out[f'{probe.name}/knn_top1'], out[f'{probe.name}/knn_top5'] = report['top1'], report['top5']
    return out
