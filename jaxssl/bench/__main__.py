"""``python -m jaxssl.bench``: the step bench (jaxssl/bench/step.py), under the name the README documents."""

from jaxssl import cli
from jaxssl.bench import step

__doc__ = step.__doc__  # what absl's --help prints: the usage of the command it runs

# The guard matters: the PyTorch worker is a spawned process, which re-imports this module as __mp_main__.
if __name__ == '__main__':
  cli.run(step.define_flags, step.main)
