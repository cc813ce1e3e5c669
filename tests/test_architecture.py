"""The package's layering, read from the source: imports point down, never in a cycle, never at a private name.

Layers, top to bottom (README, "Layout"): entry points -> modes and reports -> train -> eval -> tasks -> models
-> data, ops, sharding (and the small shared modules beside them). Function-level imports count like any other.
"""

import ast
import collections
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / 'jaxssl'

# Module prefix -> layer (higher may import lower or equal; the longest matching prefix wins).
LAYERS = {
    'jaxssl.main': 6, 'jaxssl.study': 6, 'jaxssl.bench': 6, 'jaxssl.cli': 6, 'jaxssl.config_check': 6,
    'jaxssl.benchmark': 6, 'jaxssl.benchmark_tables': 6, 'jaxssl.benchmark_figures': 6,
    'jaxssl.benchmark_records': 6, 'jaxssl.benchmark_configs': 6,
    'jaxssl.modes': 5, 'jaxssl.report': 5,
    'jaxssl.train': 4,
    'jaxssl.eval': 3,
    'jaxssl.tasks': 2,
    'jaxssl.models': 1,
    'jaxssl.data': 0, 'jaxssl.ops': 0, 'jaxssl.sharding': 0, 'jaxssl.trees': 0, 'jaxssl.runlog': 0,
    'jaxssl.registry': 0, 'jaxssl.files': 0,
}


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in PKG.rglob('*.py'):
    name = '.'.join(path.relative_to(PKG.parent).with_suffix('').parts)
    out[name[:-len('.__init__')] if name.endswith('.__init__') else name] = path
  del out['jaxssl']  # the package's empty __init__
  return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
  while name and name not in MODULES:
    name = name.rpartition('.')[0]
  return name or None


def _imports(module: str) -> list[tuple[str, str]]:
  """(imported module, the name imported from it or '') of every jaxssl import in ``module``, at any depth."""
  out = []
  for node in ast.walk(ast.parse(MODULES[module].read_text())):
    if isinstance(node, ast.Import):
      out += [(_resolve(a.name), '') for a in node.names if a.name.startswith('jaxssl')]
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('jaxssl') and not node.level:
      for a in node.names:
        target = _resolve(f'{node.module}.{a.name}')
        out.append((target, '' if target == f'{node.module}.{a.name}' else a.name))
  return [(t, n) for t, n in out if t and t != module and not module.startswith(t + '.')]


def layer(module: str) -> int:
  prefix = max((p for p in LAYERS if module == p or module.startswith(p + '.')), key=len, default=None)
  assert prefix is not None, f'{module} belongs to no layer: add it to LAYERS (and to the README layout)'
  return LAYERS[prefix]


@pytest.mark.parametrize('module', sorted(MODULES))
def test_imports_point_down(module):
  up = [t for t, _ in _imports(module) if layer(t) > layer(module)]
  assert not up, f'{module} (layer {layer(module)}) imports from higher layers: {up}'


@pytest.mark.parametrize('module', sorted(MODULES))
def test_no_private_names_imported_from_other_modules(module):
  private = [f'{t}.{n}' for t, n in _imports(module) if n.startswith('_')]
  assert not private, f'{module} imports private names: {private}'


def test_no_import_cycles():
  graph = collections.defaultdict(set)
  for m in MODULES:
    graph[m] |= {t for t, _ in _imports(m)}
  state, cycles = {}, []

  def visit(m, stack):
    state[m] = 'open'
    for t in sorted(graph[m]):
      if state.get(t) == 'open':
        cycles.append(stack[stack.index(t):] + [t])
      elif t not in state:
        visit(t, stack + [t])
    state[m] = 'done'

  for m in sorted(MODULES):
    if m not in state:
      visit(m, [m])
  assert not cycles, 'import cycles: ' + '; '.join(' -> '.join(c) for c in cycles)


def test_layers_cover_every_module():
  for m in MODULES:
    layer(m)
