r"""What training a benchmark's small fine-tuning cells as one vmapped computation would save; one JSON line per
labelled fraction.

  python -m jaxssl.bench.cells --config configs/fmnist_benchmark.py
  python -m jaxssl.bench.cells --config configs/fmnist_benchmark.py --fractions=0.001 --models=3 --nocell

The benchmark (jaxssl/benchmark.py) trains every (init, fraction, seed) cell as a run of its own. The cells of
one init and fraction have one shape (model, batch, steps) and differ only in their subset and seed, so they could
train as a batch of models: ``jax.vmap`` of the train step over stacked parameters, optimizer states, batches and
keys, compiled once. Per fraction (default: those of ``benchmark.fractions`` at most 1%), with ``--models`` cells
(default: the number of ``benchmark.seeds``) built exactly as the benchmark builds them (a random backbone; the
speed does not depend on the init):

- ``max_param_diff``: the largest difference between the parameters after ``--check_steps`` vmapped steps and
  after the same steps taken model by model on the same batches (the vmapped computation is the same training;
  ``param_diff_between_models``, that of two models of the group, gives the scale);
- ``step_ms_one_model``, ``sequential_ms`` (one step of every model in turn), ``vmapped_ms`` (one vmapped step of
  all of them), ``vmapped_over_sequential`` (< 1: the vmapped step is faster): medians of ``--steps`` rounds, the
  step fed from fixed device batches, compilation timed apart (``compile_s_*``);
- with ``--cell`` (default): one cell trained end to end as the benchmark trains it (``cell_wall_s``: build,
  compile, training, the final evaluation of the test split, checkpoint and pictures) and its part outside the
  training steps (``cell_overhead_s`` = wall - steps x ``step_ms_one_model``). A vmapped group of N cells saves at
  most (N - 1) x that overhead, less the steps' extra time when the vmapped step is slower
  (``vmapped_saving_at_most_s``, and as a share of N cells trained one by one): at most, because each model of a
  group still has its own evaluation and files.

On a CPU the step is compute-bound, so a vmapped step costs about N steps (jaxssl's oneDNN convolutions run model
by model under vmap; XLA's batched convolution is slower still): what a group saves is the per-cell overhead. On
an accelerator that small batches leave idle the vmapped step is where the saving would be.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import types

from absl import flags, logging

from jaxssl import cli
from jaxssl.bench import common


def define_flags(flag_values: flags.FlagValues = flags.FLAGS, argv=None) -> types.SimpleNamespace:
  """The command's flags, defined when it runs (not at import: the other commands define --config too)."""
  ns = types.SimpleNamespace(
      config=cli.config_file_flag('A benchmark config (configs/fmnist_benchmark.py).', flag_values=flag_values,
                                  argv=argv),
      fractions=flags.DEFINE_list('fractions', None, "Labelled fractions to measure (default: the config's "
                                  'benchmark.fractions at most 0.01).', flag_values=flag_values),
      models=flags.DEFINE_integer('models', 0, 'Cells in one vmapped group (0: the number of benchmark.seeds).',
                                  flag_values=flag_values),
      steps=flags.DEFINE_integer('steps', 20, 'Timed rounds of each way (after warm-up).', lower_bound=1,
                                 flag_values=flag_values),
      warmup=flags.DEFINE_integer('warmup', 2, 'Untimed rounds after compilation.', lower_bound=0,
                                  flag_values=flag_values),
      check_steps=flags.DEFINE_integer('check_steps', 3, 'Steps compared between the vmapped and the one-by-one '
                                       'training.', flag_values=flag_values),
      cell=flags.DEFINE_bool('cell', True, 'Also train one cell end to end, as the benchmark does, for its '
                             'overhead.', flag_values=flag_values),
      json=flags.DEFINE_string('json', '', 'Also write the rows to this JSON file.', flag_values=flag_values))
  flags.mark_flags_as_required(['config'], flag_values=flag_values)
  return ns


def _cells(config, fraction: float, models: int):
  """The benchmark's configs of ``models`` cells (seeds 0 ...) at ``fraction``, from a random backbone (its
  scratch cells, ``benchmark.scratch_overrides`` included; the selected hyper-parameter at the config's value)."""
  import jax  # pylint: disable=import-outside-toplevel
  from jaxssl import benchmark, study  # pylint: disable=import-outside-toplevel
  from jaxssl.data import datasets, subsets  # pylint: disable=import-outside-toplevel
  base = benchmark.cell_base(config)
  info = datasets.get_dataset(base.data.name, base.data)
  train, _ = subsets.load_sources(info, base.data)
  _, sizes = subsets.fold_plan(train, [fraction], str(config.benchmark.subsets), 'benchmark.subsets')
  configs = []
  for seed in range(models):
    c = study.cell_config(base, '', fraction, seed, len(train), jax.device_count(), subset_size=sizes.get(fraction, 0))
    with c.unlocked():   # the random init's cells are the benchmark's scratch cells
      benchmark.merge(c, config.benchmark.scratch_overrides, 'benchmark.scratch_overrides')
    configs.append(c)
  return configs, sizes.get(fraction)


def measure(config, fraction: float, *, models: int, steps: int, warmup: int, check_steps: int,
            cell: bool) -> dict:
  """The figures of the module docstring for one fraction."""
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  from jaxssl import ops
  from jaxssl.data import pipeline
  from jaxssl.train import experiment, loop, step as step_lib
  # pylint: enable=import-outside-toplevel
  configs, subset_size = _cells(config, fraction, models)
  exps = [experiment.build_experiment(c) for c in configs]
  e = exps[0]
  raw = step_lib.make_train_step(e.graphdef, e.tx, e.schedule, e.tasks, e.weights, e.total_steps)
  batches = []
  for x in exps:   # each cell's first batch, from its own subset, as its run draws it
    it = pipeline.train_iterator(x.train_source, x.tasks, global_batch=x.config.batch_size, seed=x.config.seed,
                                 mesh=x.mesh, num_workers=0)
    batches.append(jax.device_put(next(it)))
    getattr(it, 'close', lambda: None)()
  keys = [jax.random.PRNGKey(c.seed) for c in configs]   # each run's key, as the trainer makes it
  one = jax.jit(raw)
  group = jax.jit(jax.vmap(raw))

  def stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)

  # The same training: check_steps steps of every model, one by one and vmapped.
  alone = [x.state for x in exps]
  t0 = time.perf_counter()
  alone[0], m = one(alone[0], batches[0], keys[0])
  jax.block_until_ready(m)
  compile_one = time.perf_counter() - t0
  alone[1:] = [one(s, b, k)[0] for s, b, k in zip(alone[1:], batches[1:], keys[1:])]
  together, stacked_batch, stacked_keys = stack([x.state for x in exps]), stack(batches), stack(keys)
  t0 = time.perf_counter()
  together, m = group(together, stacked_batch, stacked_keys)
  jax.block_until_ready(m)
  compile_group = time.perf_counter() - t0
  for _ in range(check_steps - 1):
    alone = [one(s, b, k)[0] for s, b, k in zip(alone, batches, keys)]
    together, _ = group(together, stacked_batch, stacked_keys)
  leaves = list(zip(jax.tree.leaves(stack([s.params for s in alone])), jax.tree.leaves(together.params)))
  diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in leaves)
  spread = max(float(jnp.max(jnp.abs(b[0] - b[1]))) for _, b in leaves)   # model 0 against model 1: the scale

  def sequential():
    nonlocal alone
    alone = [one(s, b, k)[0] for s, b, k in zip(alone, batches, keys)]
    jax.block_until_ready(alone)

  def vmapped():
    nonlocal together
    together, out = group(together, stacked_batch, stacked_keys)
    jax.block_until_ready(out)

  seq_ms = 1e3 * statistics.median(common.step_times(sequential, steps, warmup))
  vm_ms = 1e3 * statistics.median(common.step_times(vmapped, steps, warmup))
  row = {'fraction': fraction, 'models': models, 'subset_size': subset_size, 'batch_size': e.config.batch_size,
         'steps_per_cell': e.total_steps, 'model': e.config.model.name, 'conv_path': ops.describe_path(),
         'device': jax.devices()[0].device_kind, 'check_steps': check_steps, 'max_param_diff': diff,
         'param_diff_between_models': spread,
         'compile_s_one_model': round(compile_one, 2), 'compile_s_vmapped': round(compile_group, 2),
         'step_ms_one_model': round(seq_ms / models, 2), 'sequential_ms': round(seq_ms, 2),
         'vmapped_ms': round(vm_ms, 2), 'vmapped_over_sequential': round(vm_ms / seq_ms, 3)}
  if cell:
    with tempfile.TemporaryDirectory() as workdir:
      t0 = time.perf_counter()
      loop.train_and_evaluate(configs[0], os.path.join(workdir, 'cell'))
      wall = time.perf_counter() - t0
    overhead = wall - e.total_steps * seq_ms / models / 1e3
    saving = (models - 1) * overhead - e.total_steps * (vm_ms - seq_ms) / 1e3
    row.update({'cell_wall_s': round(wall, 1), 'cell_overhead_s': round(overhead, 1),
                'vmapped_saving_at_most_s': round(saving, 1),
                'vmapped_saving_at_most_pct': round(100 * saving / (models * wall), 1)})
  return row


def summary(row: dict) -> str:
  """The row in words, for people (stderr)."""
  text = (f"bench.cells {100 * row['fraction']:g}% ({row['subset_size']} images, batch {row['batch_size']}, "
          f"{row['steps_per_cell']} steps): {row['models']} models vmapped {row['vmapped_ms']:.1f} ms a step, one "
          f"by one {row['sequential_ms']:.1f} ms (x{row['vmapped_over_sequential']:.2f}); same training to "
          f"{row['max_param_diff']:.1e}")
  if 'cell_wall_s' in row:
    text += (f"; a cell {row['cell_wall_s']:.1f} s of which {row['cell_overhead_s']:.1f} s outside its steps: a "
             f"vmapped group saves at most {row['vmapped_saving_at_most_s']:.1f} s "
             f"({row['vmapped_saving_at_most_pct']:.0f}% of {row['models']} cells)")
  return text


def main(argv, *, opts: types.SimpleNamespace):
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])} (flags are --name=value; --help lists them)')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  config = opts.config.value
  if 'benchmark' not in config:
    cli.fail('--config must be a benchmark config (one with a benchmark block, e.g. configs/fmnist_benchmark.py)')
  fractions = ([float(f) for f in opts.fractions.value] if opts.fractions.value else
               [float(f) for f in config.benchmark.fractions if float(f) <= 0.01])
  models = opts.models.value or len(config.benchmark.seeds)
  if models < 2 or not fractions:
    cli.fail(f'nothing to measure: --models={models} (at least 2) and fractions {fractions}')
  rows = []
  with cli.errors_as_one_line():
    for fraction in fractions:
      row = measure(config, fraction, models=models, steps=opts.steps.value, warmup=opts.warmup.value,
                    check_steps=max(1, opts.check_steps.value), cell=opts.cell.value)
      print(summary(row), file=sys.stderr, flush=True)
      print(json.dumps(row), flush=True)
      rows.append(row)
  common.write_json(opts.json.value, rows)


if __name__ == '__main__':
  cli.run(define_flags, main)
