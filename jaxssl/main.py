r"""jaxssl: train and evaluate (self-)supervised models on images.

  python -m jaxssl.main --config configs/fmnist_supervised.py --workdir runs/fmnist
  python -m jaxssl.main --config configs/fmnist_supervised.py:quick --workdir /tmp/q --config.optim.lr=0.1
  python -m jaxssl.main --config configs/fmnist_supervised.py --workdir runs/fmnist --mode=eval

Modes: train (resumes from the latest checkpoint in --workdir), eval (restores a checkpoint,
--config.eval_step=-1 for the latest, and evaluates --config.data.eval_split), knn (weighted k-NN probe of the
backbone of --config.init_from, or of --workdir's latest checkpoint; writes knn_<split>.json), predict (a
DeepFashion category + attribute model's submission files, predictions/category.csv and attribute.csv, for
--config.multitask.predict_split; see jaxssl/eval/attributes.py). The modes besides train are in jaxssl/modes.py.

Exit codes: 0 done; 2 an error, printed as one line `error: ...` (bad input, missing data, another run holding
the workdir, a checkpoint of another config or none readable, a full or read-only disk); 3 training stopped by a
non-finite loss or gradient (jaxssl/train/loop.py); 143 training stopped by SIGTERM or Ctrl-C, checkpointed (rerun
the same command to resume).
"""

import sys

from absl import app, flags, logging

from jaxssl import cli

_CONFIG = cli.config_file_flag('Config file, e.g. configs/fmnist_supervised.py[:arg].')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, metrics, plots.')
_MODE = flags.DEFINE_string('mode', None, 'Overrides config.mode: train, eval, knn or predict.')
_MULTIHOST = flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() first (TPU pods, Slurm, '
                               'GPU clusters: arguments are detected from the environment).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])} (flags are --name=value; --help lists them)')
  if not _WORKDIR.value.strip():
    cli.fail('--workdir is empty (an unset shell variable?): give the folder of the run')
  if not flags.FLAGS['verbosity'].present:  # orbax/tfds INFO lines drown the progress; --verbosity=0 shows them
    logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  if _MODE.value:
    with config.unlocked():
      config.mode = _MODE.value

  from jaxssl.config_check import check_config  # pylint: disable=import-outside-toplevel
  try:
    check_config(config)
  except ValueError as e:
    cli.fail(f'bad config: {e}')

  import jax  # pylint: disable=import-outside-toplevel
  if _MULTIHOST.value:
    try:
      jax.distributed.initialize()
    except (ValueError, RuntimeError) as e:  # no cluster found, or the coordinator did not answer
      why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
      cli.fail(f'--multihost: jax.distributed.initialize() failed ({why}); '
               'run it under Slurm (srun), on every host of a TPU pod, or with launch/local.sh N on one machine')

  from jaxssl import modes  # pylint: disable=import-outside-toplevel
  from jaxssl.train import loop  # pylint: disable=import-outside-toplevel
  with cli.errors_as_one_line():
    if config.mode == 'train':
      result = loop.train_and_evaluate(config, _WORKDIR.value)
      sys.exit(result['exit_code'])
    modes.RUNNERS[config.mode](config, _WORKDIR.value)


def run():
  cli.add_config_import_path(sys.argv)
  app.run(main, flags_parser=cli.parse_flags)


if __name__ == '__main__':
  run()
