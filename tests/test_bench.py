"""The bench's PyTorch twins are the same networks as jaxssl's (skipped where torch is not installed)."""

import os

import jax
import numpy as np
import pytest
from flax import nnx

from jaxssl.models import build_backbone

torch = pytest.importorskip('torch')
torch_twin = pytest.importorskip('jaxssl.bench.torch_twin')


@pytest.mark.parametrize('model, shape', [('cifarnet', (28, 28, 1)), ('cifarnet', (32, 32, 3)),
                                          ('resnet20', (28, 28, 1)), ('resnet18_cifar', (32, 32, 3))])
def test_torch_twin_has_the_same_parameters(model, shape):
  """Same layers, same shapes: equal parameter counts for backbone + a 4-way head, and the same kernel sizes."""
  backbone = build_backbone(model, input_shape=shape, rngs=nnx.Rngs(0))
  feature = jax.eval_shape(lambda: backbone(np.zeros((1, *shape), np.float32)))[backbone.output_name]
  head = feature.shape[-1] * 4 + 4
  params = nnx.state(backbone, nnx.Param)
  jax_kernels = sorted(p.shape for p in jax.tree.leaves(params) if len(p.shape) == 4)
  twin = torch_twin.build(model, shape[2], shape[0], 4)
  assert sum(p.size for p in jax.tree.leaves(params)) + head == sum(p.numel() for p in twin.parameters())
  torch_kernels = sorted((k1, k2, i, o) for o, i, k1, k2 in (m.weight.shape for m in twin.modules()
                                                                if isinstance(m, torch.nn.Conv2d)))
  assert jax_kernels == torch_kernels


def test_measure_reports_images_per_second():
  result = torch_twin.measure('cifarnet', 'rotation', 8, (28, 28, 1), steps=2, warmup=0)
  assert result['torch_images_per_s'] > 0 and result['torch_step_ms_median'] > 0
  with pytest.raises(ValueError, match='no PyTorch twin for task'):
    torch_twin.measure('cifarnet', 'jigsaw', 8, (28, 28, 1), steps=1, warmup=0)


def test_bench_alternates_jaxssl_and_torch_steps(generated_tfds_dir):
  """``python -m jaxssl.bench`` times one jaxssl step then one PyTorch step per round, and their ratio."""
  from jaxssl.bench import step as bench  # pylint: disable=import-outside-toplevel
  from conftest import small_config  # pylint: disable=import-outside-toplevel
  config = small_config(generated_tfds_dir, batch_size=16)
  order = []
  torch_step = torch_twin.make_step('cifarnet', 'classify', 16, (28, 28, 1))

  def recorded_torch_step():
    order.append('torch')
    return torch_step()

  result = bench.measure(config, steps=3, warmup=1, pipeline_batches=2, peak_gflops=166.0,
                         torch_step=recorded_torch_step)
  assert len(order) == 4  # one per warm-up round and per timed round
  assert result['jax_over_torch'] == pytest.approx(result['torch_step_ms_median'] / result['step_ms_median'],
                                                   rel=1e-2)
  assert result['train_images_per_s'] > 0 and result['gflops_per_step'] > 0
  assert 0 < result['step_memory']['arguments_mb'] < result['step_memory_mb']   # XLA's plan of the step
  order.clear()
  result = bench.measure(config, steps=2, warmup=1, pipeline_batches=2, peak_gflops=166.0,
                         torch_step=recorded_torch_step, torch_timing='blocks')
  assert len(order) == 3 and result['timing'] == 'all jax steps, then all torch steps'
  with pytest.raises(ValueError, match='torch_timing'):
    bench.measure(config, steps=1, warmup=0, pipeline_batches=1, peak_gflops=1.0, torch_timing='interleaved')


def test_torch_step_process_runs_steps_in_another_process():
  """The bench's PyTorch worker: a process of its own that runs one SGD step per call and stops on close."""
  worker = torch_twin.StepProcess('cifarnet', 'rotation', 4, (28, 28, 1))
  try:
    assert worker.info['torch'] == torch.__version__
    losses = [worker() for _ in range(3)]
    assert all(np.isfinite(losses)) and losses[-1] != losses[0]  # the parameters change from step to step
    assert worker._proc.pid != os.getpid()  # pylint: disable=protected-access
  finally:
    worker.close()
  assert not worker._proc.is_alive()  # pylint: disable=protected-access


def test_torch_twin_in_bfloat16_runs_its_convolutions_in_bfloat16():
  """dtype='bfloat16' is PyTorch's autocast: the convolutions compute in bf16, the loss stays a float32 number."""
  seen = []
  hook = torch.nn.modules.module.register_module_forward_hook(
      lambda m, _, out: seen.append(out.dtype) if isinstance(m, torch.nn.Conv2d) else None)
  try:
    loss16 = torch_twin.make_step('cifarnet', 'rotation', 8, (28, 28, 1), dtype='bfloat16')()
    assert seen and set(seen) == {torch.bfloat16}
    seen.clear()
    loss32 = torch_twin.make_step('cifarnet', 'rotation', 8, (28, 28, 1))()
    assert set(seen) == {torch.float32}
  finally:
    hook.remove()
  assert np.isfinite(loss16) and np.isfinite(loss32)
  with pytest.raises(ValueError, match="no PyTorch twin in dtype 'float16'"):
    torch_twin.make_step('cifarnet', 'rotation', 8, (28, 28, 1), dtype='float16')


def test_bench_ops_times_pytorch_in_a_process_of_its_own(tmp_path):
  """The per-layer bench from its command line: each row gains PyTorch's times, measured in a worker process."""
  import json  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  out = tmp_path / 'ops.json'
  done = subprocess.run([sys.executable, '-m', 'jaxssl.bench.ops', '--layers=resnet_stem', '--batch=2',
                         '--repeats=1', f'--json={out}'], capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  (row,) = json.loads(out.read_text())
  assert row['layer'] == 'resnet_stem' and row['torch_fwd_ms'] > 0 and row['torch_dx_plus_dw_ms'] > 0
  assert row['fwd_xla_ms'] > 0


def _simclr_config(tfds_dir, batch_size):
  from conftest import small_config  # pylint: disable=import-outside-toplevel
  c = small_config(tfds_dir, **{'batch_size': batch_size, 'model.options.dropout': 0.0})
  del c.tasks.classify
  c.tasks.simclr = {'crop_scale': (0.2, 1.0), 'proj_hidden': 64, 'proj_dim': 32, 'temperature': 0.5}
  c.optim.name, c.optim.lr, c.optim.nesterov, c.optim.weight_decay = 'lars', 0.5, False, 1e-4
  c.optim.schedule, c.optim.warmup_epochs = 'constant', 0.0   # the twin's lr is constant
  c.online_probe.enabled = False
  return c


def test_simclr_twin_matches_jaxssl_loss_step_for_step(generated_tfds_dir):
  """The SimCLR twin on jaxssl's own batch and weights gives jaxssl's loss at step 0 (model, views, projector,
  NT-Xent) and after two LARS steps (the optimizer too)."""
  from jaxssl import sharding, trees  # pylint: disable=import-outside-toplevel
  from jaxssl.bench import step as bench  # pylint: disable=import-outside-toplevel
  from jaxssl.data import pipeline  # pylint: disable=import-outside-toplevel
  from jaxssl.data.datasets import get_dataset  # pylint: disable=import-outside-toplevel
  from jaxssl.train import experiment  # pylint: disable=import-outside-toplevel
  config = _simclr_config(generated_tfds_dir, 8)
  exp = experiment.build_experiment(config)
  it = pipeline.train_iterator(exp.train_source, exp.tasks, global_batch=8, seed=0, mesh=exp.mesh,
                               **pipeline.iterator_options(config.data))
  try:
    host_batch = next(it)
  finally:
    getattr(it, 'close', lambda: None)()
  options, notes, shape, why_not = bench._simclr_options(  # pylint: disable=protected-access
      config, get_dataset(config.data.name, config.data))
  assert why_not is None and notes['torch_optimizer'].startswith('LARS')
  step = torch_twin.make_step('cifarnet', 'simclr', 8, shape, options=options, batch=host_batch['simclr'])
  torch_twin.load_jax_params(step.net, {k: np.asarray(v) for k, v in trees.flat_paths(exp.state.params).items()})
  batch, state, rng = sharding.shard_batch(host_batch, exp.mesh), exp.state, jax.random.PRNGKey(0)
  jax_losses, torch_losses = [], []
  for _ in range(3):
    state, metrics = exp.train_step(state, batch, rng)
    jax_losses.append(float(metrics['loss']))
    torch_losses.append(step())
  assert jax_losses[2] != pytest.approx(jax_losses[0], abs=1e-3)   # the steps moved the weights
  np.testing.assert_allclose(torch_losses, jax_losses, rtol=2e-4, atol=2e-4)


def test_simclr_twin_runs_in_its_own_process_on_the_batch_it_is_sent():
  worker = torch_twin.StepProcess('cifarnet', 'simclr', 4, (28, 28, 1),
                                  options={'mean': 0.3, 'std': 0.35, 'proj_hidden': 32, 'proj_dim': 16})
  try:
    first = worker()
    images = np.zeros((4, 2, 28, 28, 1), np.uint8)
    worker.set_batch({'image': images, 'weight': np.ones(4, np.float32)})
    # identical views of identical images: every candidate as similar as the partner, loss log(2N - 1)
    assert worker() == pytest.approx(np.log(7), rel=1e-4) and np.isfinite(first)
  finally:
    worker.close()
  with pytest.raises(ValueError, match="task 'simclr' with model 'resnet20'"):
    torch_twin.make_step('resnet20', 'simclr', 4, (28, 28, 1))
