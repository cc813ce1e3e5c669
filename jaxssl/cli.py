"""Command-line plumbing shared by ``jaxssl.main`` and the benches (defines no flags on import; ``torch_flag`` and
``json_flag`` define the benches' shared ones when first asked, so that all of them import in one process)."""

import functools
import os
import sys

from absl import flags


@functools.lru_cache(maxsize=None)
def torch_flag() -> flags.FlagHolder:
  """``--[no]torch``, defined once for both benches (so that both can be imported in one process)."""
  return flags.DEFINE_bool('torch', True, 'Also time PyTorch beside jaxssl (its twin of the model and task, or '
                           'of the layer), when torch is installed.')


@functools.lru_cache(maxsize=None)
def json_flag() -> flags.FlagHolder:
  """``--json=FILE``, defined once for the benches that write their rows."""
  return flags.DEFINE_string('json', '', 'Also write the rows to this JSON file.')


def add_config_import_path(argv):
  """Config files may import their siblings (`from configs import x`): make the folder above importable."""
  for i, arg in enumerate(argv):
    path = arg.split('=', 1)[1] if arg.startswith('--config=') else argv[i + 1] if arg == '--config' and \
        i + 1 < len(argv) else None
    if path:
      configs_dir = os.path.dirname(os.path.abspath(path.split(':', 1)[0]))
      sys.path.insert(0, os.path.dirname(configs_dir))
      return


def parse_flags(argv):
  """absl's parser, plus one clean line for a config override naming a field that does not exist."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'FATAL Flags parsing error: {e}\nPass --helpfull to see help on flags.')
  except (AttributeError, KeyError) as e:  # ml_collections: unknown field, with a suggestion
    msg = str(e).strip('\'"').replace('\\n', ' ').replace('\\\'', "'")
    sys.exit(f'FATAL Flags parsing error: no such config field: {msg}')
