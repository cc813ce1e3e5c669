r"""Measures a config's speed and prints one JSON line.

  python -m jaxssl.bench --config configs/fmnist_supervised.py
  python -m jaxssl.bench --config configs/fmnist_supervised.py --config.batch_size=128 --steps 30 --peak_gflops 166
  python -m jaxssl.bench --config configs/fmnist_rotation.py --config.model.conv_impl=xla   # XLA's own convs

Figures: compile time of the train step; steady-state step time and images/s (compile excluded, the step
fed from a fixed device batch so only the step is timed); the input pipeline's images/s on its own (source
images, before any pretext multiplies them; with the run's input settings, ``input_settings``, and with 0, 1,
2, 4, ... up to the cores' worker processes, ``pipeline_images_per_s_by_workers``, --pipeline_workers), its
ratio to the step's, its cost per image by stage timed apart on the same batches (``pipeline_us_per_image``:
read + decode, stack, the tasks' transforms, the host-to-device copy; --stage_batches), and on paper what an H100
step of the config would consume and how many cores of this pipeline that takes (``gpu_on_paper``,
jaxssl/bench/input.py); these are also printed for people on stderr. Model FLOPs per step (XLA's cost analysis
of the step written with plain convolutions, so the figure does not depend on --config.model.conv_impl), the
achieved GFLOP/s and their fraction of --peak_gflops (model-FLOPs utilization; default peak: this 2-core CPU's
FP32 peak, 2 cores x 32 FLOP/cycle x 2.6 GHz).

With PyTorch installed (``pip install torch==2.13.0``; never required) and --torch (default), the same model,
pretext batch and SGD step run in PyTorch eager (channels_last) in a process of its own, and the line gains
torch_step_ms_median, torch_images_per_s and jax_over_torch (>1: jaxssl is faster). The two steps alternate,
one jaxssl step then one PyTorch step per round, so both see the same machine (on a shared VM, step times drift
by 10-40% over minutes); --torch_timing=blocks runs all of jaxssl's steps, then all of PyTorch's, each framework
alone while it runs. The two processes share the kernel's page allocator: each step allocates and frees its
temporaries (over a GB for ResNet-18) and faults them in anew, and on a VM that hands freed memory back to its
host those faults cost more after the other process's step (README, "Speed"; docs/benchmarks.md). Earlier
versions timed PyTorch's steps after jaxssl's in the same process, which slowed PyTorch by up to 1.5x and
overstated jaxssl's ratio accordingly.
Models with a PyTorch twin: cifarnet, resnet20, resnet18_cifar; tasks: rotation, classify, and simclr (cifarnet):
jaxssl's whole SimCLR step, fed the very batch of views jaxssl's pipeline made, with the same projector, NT-Xent
and temperature, and LARS written out in PyTorch as optax.lars computes it (torch_twin.LARS; at a constant lr,
the config's peak: the schedule's value changes no work). Any other optimizer is named in ``torch_optimizer``.
``step_memory_mb``: what XLA's compiled jaxssl step holds on the device (arguments + outputs + temporaries -
outputs aliased onto donated arguments, from ``compiled.memory_analysis()``), for every config. A bfloat16 model
(``"--config.model.options={'dtype': 'bfloat16'}"``) meets PyTorch under ``torch.autocast('cpu', torch.bfloat16)``;
give --peak_gflops the CPU's bf16 peak for its utilization figure.
"""

import json
import platform
import statistics
import sys
import time
import types

from absl import flags, logging

from jaxssl import cli

TORCH_TIMINGS = ('alternate', 'blocks')


def define_flags(flag_values: flags.FlagValues = flags.FLAGS, argv=None) -> types.SimpleNamespace:
  """The command's flags, defined when it runs rather than at import: jaxssl.main and the other benches define
  some of the same names (--config, --torch, --json), and tests import them all in one process. ``argv`` (default
  sys.argv) is the command line whose --config.* overrides become flags: ml_collections reads them at definition."""
  ns = types.SimpleNamespace(
      config=cli.config_file_flag('Config file to measure.', flag_values=flag_values, argv=argv),
      steps=flags.DEFINE_integer('steps', 20, 'Timed train steps (after warm-up).', lower_bound=1,
                                 flag_values=flag_values),
      warmup=flags.DEFINE_integer('warmup', 3, 'Untimed steps after compilation.', lower_bound=0,
                                  flag_values=flag_values),
      pipeline_batches=flags.DEFINE_integer('pipeline_batches', 30, 'Batches drawn to time the input pipeline.',
                                            lower_bound=1, flag_values=flag_values),
      pipeline_workers=flags.DEFINE_list('pipeline_workers', None, 'Worker process counts to time the pipeline '
                                         'with (default: 0, 1, 2, 4, ... up to the cores; "none": skip).',
                                         flag_values=flag_values),
      stage_batches=flags.DEFINE_integer('stage_batches', 10, 'Batches on which each stage of the pipeline is '
                                         'timed apart (0: skip).', lower_bound=0, flag_values=flag_values),
      peak_gflops=flags.DEFINE_float('peak_gflops', 166.0, 'Peak GFLOP/s of the device, for the utilization '
                                     'figure.', flag_values=flag_values),
      torch=flags.DEFINE_bool('torch', True, 'Also time PyTorch beside jaxssl (its twin of the model and task), '
                              'when torch is installed.', flag_values=flag_values),
      torch_timing=flags.DEFINE_enum('torch_timing', 'alternate', TORCH_TIMINGS,
                                     'alternate: one jaxssl step, then one PyTorch step, per round; blocks: all of '
                                     "jaxssl's steps, then all of PyTorch's (each alone while it runs).",
                                     flag_values=flag_values))
  flags.mark_flags_as_required(['config'], flag_values=flag_values)
  return ns


def measure(config, *, steps: int, warmup: int, pipeline_batches: int, peak_gflops: float,
            torch_step=None, torch_timing: str = 'alternate', worker_counts=(), stage_batches: int = 0) -> dict:
  """The figures of one config. With ``torch_step`` (a PyTorch step, ``torch_twin.make_step``) the two steps
  are timed alternately, one of each per round, so both see the same machine (``torch_timing='alternate'``), or
  all of jaxssl's steps then all of PyTorch's, each framework alone while it runs (``'blocks'``).
  ``worker_counts``: also time the pipeline with each of these numbers of worker processes (jaxssl/bench/input.py,
  with what an H100 step would need); ``stage_batches`` > 0: time its stages apart on that many batches."""
  if torch_timing not in TORCH_TIMINGS:
    raise ValueError(f"torch_timing must be one of {', '.join(TORCH_TIMINGS)}, not {torch_timing!r}")
  import jax  # pylint: disable=import-outside-toplevel
  from jaxssl.data import decoded, pipeline  # pylint: disable=import-outside-toplevel
  from jaxssl import sharding  # pylint: disable=import-outside-toplevel
  from jaxssl.train import experiment  # pylint: disable=import-outside-toplevel

  from jaxssl.bench import input as input_bench  # pylint: disable=import-outside-toplevel

  exp = experiment.build_experiment(config)
  inputs = pipeline.input_settings(config.data)
  source, cache_line = exp.train_source, ''
  if inputs.decoded_cache:   # once, before the iterators (each would say it again); they read through it
    source, cache_line = decoded.use_cache(source)
  options = {**inputs.options(), 'decoded_cache': False}
  it = pipeline.train_iterator(source, exp.tasks, global_batch=config.batch_size, seed=config.seed,
                               mesh=exp.mesh, **options)
  try:
    next(it)  # first batch pays for opening files / starting workers
    t0 = time.perf_counter()
    for _ in range(pipeline_batches):
      host_batch = next(it)
    pipeline_ips = pipeline_batches * config.batch_size / (time.perf_counter() - t0)
  finally:  # grain's workers and their shared memory end here, not at exit
    getattr(it, 'close', lambda: None)()

  input_figures = {'input_settings': inputs.line(), **({'decoded_cache': cache_line} if cache_line else {})}
  if worker_counts:
    def make_iterator(k):
      return pipeline.train_iterator(source, exp.tasks, global_batch=config.batch_size, seed=config.seed,
                                     mesh=exp.mesh, **{**options, 'num_workers': k})
    input_figures['pipeline_images_per_s_by_workers'] = input_bench.scaling(
        make_iterator, worker_counts, batches=pipeline_batches, images_per_batch=config.batch_size)
  if stage_batches:
    input_figures['pipeline_us_per_image'] = input_bench.stage_costs(
        source, exp.tasks, global_batch=config.batch_size, seed=config.seed, mesh=exp.mesh,
        batches=stage_batches)

  batch = sharding.shard_batch(host_batch, exp.mesh)
  if torch_step is not None and hasattr(torch_step, 'set_batch') and len(config.tasks) == 1:
    torch_step.set_batch(host_batch[next(iter(config.tasks.keys()))])   # the twins that take jaxssl's own batch
  rng = jax.random.PRNGKey(0)
  t0 = time.perf_counter()
  compiled = exp.train_step.lower(exp.state, batch, rng).compile()
  compile_s = time.perf_counter() - t0
  flops = _model_flops(exp, batch, rng)
  memory = _step_memory(compiled)

  carry = {'state': exp.state}

  def jax_step():
    carry['state'], metrics = compiled(carry['state'], batch, rng)
    jax.block_until_ready(metrics)

  fns = {'jax': jax_step, **({'torch': torch_step} if torch_step else {})}
  times = {name: [] for name in fns}

  def timed(name):
    t0 = time.perf_counter()
    fns[name]()
    times[name].append(time.perf_counter() - t0)

  if torch_timing == 'alternate':
    for _ in range(warmup):
      for fn in fns.values():
        fn()
    for _ in range(steps):
      for name in fns:
        timed(name)
  else:
    for name, fn in fns.items():
      for _ in range(warmup):
        fn()
      for _ in range(steps):
        timed(name)
  step_s = statistics.median(times['jax'])
  train_ips = config.batch_size / step_s
  by_workers = input_figures.get('pipeline_images_per_s_by_workers', {})
  if by_workers:
    counts = sorted(int(k) for k in by_workers)
    one = by_workers.get('1') or max(by_workers[str(k)] / max(k, 1) for k in counts)
    input_figures['pipeline_to_step_ratio_by_workers'] = {str(k): round(by_workers[str(k)] / train_ips, 2)
                                                          for k in counts}
    if counts[-1] > 1 and '1' in by_workers:
      input_figures['pipeline_worker_scaling'] = round(by_workers[str(counts[-1])] / (counts[-1] * one), 2)
    input_figures['gpu_on_paper'] = input_bench.gpu_on_paper(flops / 1e9, config.batch_size, one)
  torch_figures = {}
  if torch_step:
    torch_s = statistics.median(times['torch'])
    torch_figures = {'torch_step_ms_median': round(1e3 * torch_s, 2),
                     'torch_step_ms_min': round(1e3 * min(times['torch']), 2),
                     'torch_images_per_s': round(config.batch_size / torch_s, 1),
                     'jax_over_torch': round(torch_s / step_s, 3),
                     'timing': {'alternate': 'alternating jax and torch steps',
                                'blocks': 'all jax steps, then all torch steps'}[torch_timing]}
  return {
      'model': config.model.name, 'tasks': sorted(config.tasks.keys()),
      'dataset': config.data.name, 'batch_size': config.batch_size,
      'conv_impl': config.model.conv_impl, 'dtype': str(config.model.options.get('dtype', 'float32')),
      'devices': f'{jax.device_count()}x {jax.devices()[0].device_kind}', 'host': platform.processor() or
      platform.machine(), 'jax': jax.__version__,
      'compile_s': round(compile_s, 2), 'step_ms_median': round(1e3 * step_s, 2),
      'step_ms_min': round(1e3 * min(times['jax']), 2), 'train_images_per_s': round(train_ips, 1),
      'pipeline_images_per_s': round(pipeline_ips, 1),
      'pipeline_to_step_ratio': round(pipeline_ips / train_ips, 2),
      'gflops_per_step': round(flops / 1e9, 3), 'achieved_gflops': round(flops / step_s / 1e9, 2),
      'peak_gflops': peak_gflops, 'peak_fraction': round(flops / step_s / 1e9 / peak_gflops, 4), **memory,
      **input_figures, **torch_figures,
  }


def _step_memory(compiled) -> dict:
  """The compiled step's memory as XLA plans it: arguments (state, batch, key) + outputs + temporaries, less the
  outputs written in place of donated arguments (the new state over the old), in MiB; empty where the backend
  does not say."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  # backends without the analysis
    return {}
  if m is None:
    return {}
  mib = 2.0 ** 20
  total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
  return {'step_memory_mb': round(total / mib, 1),
          'step_memory': {'arguments_mb': round(m.argument_size_in_bytes / mib, 1),
                          'outputs_mb': round(m.output_size_in_bytes / mib, 1),
                          'temporaries_mb': round(m.temp_size_in_bytes / mib, 1),
                          'aliased_mb': round(m.alias_size_in_bytes / mib, 1),
                          'counts': "XLA's plan for the compiled jaxssl step: arguments + outputs + temporaries "
                                    '- outputs aliased onto donated arguments (MiB, all devices)'}}


def _model_flops(exp, batch, rng) -> float:
  """FLOPs of the step with XLA's plain convolutions: the im2col path hides its matmuls inside loops, whose
  bodies XLA's cost analysis counts once, and oneDNN's custom calls count none. The setting is part of jit's cache
  key (jaxssl/ops/dispatch.py), so lowering under 'xla' traces the step anew without touching the run's."""
  from jaxssl import ops  # pylint: disable=import-outside-toplevel  # the bench imports jax when it runs
  with ops.use_impl('xla'):
    cost = exp.train_step.lower(exp.state, batch, rng).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', 0.0)) if cost else 0.0


def _torch_step(config):
  """(the PyTorch twin's step or None, what to report about it)."""
  try:
    from jaxssl.bench import torch_twin  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None, {'torch': 'not installed (pip install torch==2.13.0 for the comparison)'}
  from jaxssl.data.datasets import get_dataset  # pylint: disable=import-outside-toplevel
  kinds = [t.get('kind', name) for name, t in config.tasks.items()]
  if len(kinds) != 1 or kinds[0] not in torch_twin.SUPPORTED_TASKS or \
      config.model.name not in torch_twin.TASK_MODELS.get(kinds[0], torch_twin.SUPPORTED_MODELS):
    return None, {'torch': f'no PyTorch twin for model {config.model.name} with tasks {kinds}'}
  dtype = str(config.model.options.get('dtype', 'float32'))
  if dtype not in torch_twin.DTYPES:
    return None, {'torch': f'no PyTorch twin in dtype {dtype}'}
  info = get_dataset(config.data.name, config.data)
  shape, options, notes = info.input_shape, None, {}
  if kinds[0] == 'simclr':
    options, notes, shape, why_not = _simclr_options(config, info)
    if why_not:
      return None, {'torch': f'no PyTorch twin: {why_not}'}
  worker = torch_twin.StepProcess(config.model.name, kinds[0], config.batch_size, shape, dtype, options=options)
  return worker, {**worker.info, **notes}


def _simclr_options(config, info):
  """(the twin's options, notes for the JSON line, the views' shape, why there is no twin or None) for a SimCLR
  config: the task as jaxssl builds it (dataset mean and std), the optimizer as jaxssl.train.optim reads it."""
  from jaxssl.tasks import build_tasks  # pylint: disable=import-outside-toplevel
  (task,), _ = build_tasks(config.tasks, info)
  if task.feature not in (None, '', 'fc2') or task.pool != 'flatten':
    return None, {}, None, f'simclr reading feature {task.feature!r} pooled {task.pool!r} (the twin reads fc2)'
  if config.model.options.get('dropout', 0.0):
    return None, {}, None, 'simclr with dropout in the backbone'
  o = config.optim
  optim = {'name': 'lars' if o.name == 'lars' else 'sgd', 'lr': float(o.lr), 'momentum': float(o.momentum),
           'nesterov': bool(o.nesterov), 'weight_decay': float(o.weight_decay),
           'trust_coefficient': float(o.trust_coefficient)}
  notes = {'torch_optimizer': 'LARS as optax.lars (torch_twin.LARS), constant lr' if o.name == 'lars' else
           f"differs: jaxssl {o.name}, PyTorch SGD (the twin writes out LARS only)"}
  if o.grad_clip_norm:
    notes['torch_optimizer'] += '; jaxssl clips the gradient norm, PyTorch does not'
  options = {'mean': task.mean, 'std': task.std, 'temperature': float(task.temperature),
             'proj_hidden': int(task.proj_hidden), 'proj_dim': int(task.proj_dim), 'optim': optim}
  return options, notes, task.backbone_input_shape(info.input_shape), None


def main(argv, *, opts: types.SimpleNamespace):
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])} (flags are --name=value; --help lists them)')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  from jaxssl.config_check import check_config  # pylint: disable=import-outside-toplevel
  try:
    check_config(opts.config.value)
  except ValueError as e:
    raise SystemExit(f'error: bad config: {e}') from None
  torch_step = None
  config = opts.config.value
  if opts.torch.value and config.online_probe.enabled:  # PyTorch's twin has no probe: time the same work
    with config.unlocked():
      config.online_probe.enabled = False
    print('bench: online probe off, as in the PyTorch twin (--torch=false times the config as it is)',
          file=sys.stderr)
  try:
    with cli.errors_as_one_line():
      torch_step, torch_info = _torch_step(opts.config.value) if opts.torch.value else (None, {})
      result = measure(opts.config.value, steps=opts.steps.value, warmup=opts.warmup.value,
                       pipeline_batches=opts.pipeline_batches.value, peak_gflops=opts.peak_gflops.value,
                       torch_step=torch_step, torch_timing=opts.torch_timing.value,
                       worker_counts=_worker_counts(opts.pipeline_workers.value),
                       stage_batches=opts.stage_batches.value)
  finally:
    if torch_step is not None:
      torch_step.close()
  print(input_summary(result), file=sys.stderr, flush=True)
  print(json.dumps({**result, **torch_info}), flush=True)


def _worker_counts(flag: list[str] | None) -> list[int]:
  from jaxssl.bench import input as input_bench  # pylint: disable=import-outside-toplevel
  from jaxssl.data import pipeline  # pylint: disable=import-outside-toplevel
  if flag is None:
    return input_bench.worker_counts(pipeline.machine_cores())
  if [w.lower() for w in flag] in (['none'], []):
    return []
  try:
    return sorted({int(w) for w in flag})
  except ValueError:
    cli.fail(f'--pipeline_workers takes worker counts or none, not {",".join(flag)}')


def input_summary(r: dict) -> str:
  """The input figures of a bench result for people (stderr; the JSON line has them all)."""
  lines = [f"{r['input_settings']}: pipeline {r['pipeline_images_per_s']:,.0f} images/s, step "
           f"{r['train_images_per_s']:,.0f} images/s, {r['pipeline_to_step_ratio']:.2f}x"]
  if r.get('decoded_cache'):
    lines.append(f"  {r['decoded_cache']}")
  if by := r.get('pipeline_images_per_s_by_workers'):
    ratios = r['pipeline_to_step_ratio_by_workers']
    lines.append('  by worker processes: ' + ', '.join(f'{k}: {v:,.0f}/s ({ratios[k]:.1f}x)' for k, v in by.items())
                 + (f"; scaling {r['pipeline_worker_scaling']:.2f} of linear" if 'pipeline_worker_scaling' in r
                    else ''))
  if us := r.get('pipeline_us_per_image'):
    total = sum(us.values()) or 1.0
    lines.append('  per image: ' + ', '.join(f'{k} {v:.0f} us ({100 * v / total:.0f}%)' for k, v in us.items()))
  for dtype, g in r.get('gpu_on_paper', {}).items():
    if dtype != 'how':
      lines.append(f"  on paper, an H100 step in {dtype}: {g['h100_step_images_per_s']:,.0f} images/s, "
                   f"{g['cores_needed']} cores of this pipeline (one worker each)")
  return '\n'.join(lines)



if __name__ == '__main__':
  cli.run(define_flags, main)
