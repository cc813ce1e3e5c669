"""Registries by name: a name maps to a ``'module:Class'`` path, imported when first used (so that a config error
is reported before anything heavy loads); a ``'module:Class'`` path given directly names code outside jaxssl."""

from __future__ import annotations

import importlib
from collections.abc import Mapping


def lookup(kind: str, registry: Mapping[str, str], what: str) -> type:
  """The class ``kind`` names in ``registry`` (or as a ``'module:Class'`` path); one line of error otherwise."""
  path = registry.get(kind, kind if ':' in kind else None)
  if path is None:
    raise ValueError(f"unknown {what} '{kind}'; choose one of: {', '.join(sorted(registry))} (or give a "
                     "'module:Class' path)")
  module, name = path.split(':')
  try:
    return getattr(importlib.import_module(module), name)
  except (ImportError, AttributeError) as e:
    raise ValueError(f"{what} '{kind}': cannot import {path} ({e})") from e


# A dataclass field's annotation (a string: the modules use postponed annotations) -> the values a config may give
# it. Other annotations (unions, callables, arrays) are left to the class's own checks.
_ACCEPTS = {'bool': (bool,), 'int': (int,), 'float': (int, float), 'str': (str,)}


def option_type_errors(cls: type, options: Mapping) -> list[str]:
  """The options of a dataclass (a task's, an evaluator's) whose value is not of its field's type (bool, int,
  float, str, tuple): a config may give any value, and the command line parses a key the config file leaves out as
  a Python literal, else a string (``label_smoothing=high``, ``flip='false'``)."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  types = {f.name: str(f.type).replace(' ', '') for f in dataclasses.fields(cls)}
  bad = []
  for key, value in options.items():
    kind = types.get(key, '')
    accepts = (tuple, list) if kind.startswith(('tuple[', 'Sequence[')) or kind == 'tuple' else _ACCEPTS.get(kind)
    if accepts and (not isinstance(value, accepts) or (isinstance(value, bool) and bool not in accepts)):
      bad.append(f'{key}={value!r} (takes {"a tuple" if tuple in accepts else kind})')
  return bad
