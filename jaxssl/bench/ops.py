r"""Times convolution layers' three passes, XLA's against jaxssl's CPU fast path, one JSON line per layer.

  python -m jaxssl.bench.ops                        # the layers of CifarNet and ResNet-18 (CIFAR stem), 28x28 input
  python -m jaxssl.bench.ops --layers=cifarnet_conv2,resnet_stage1 --batch=256 --repeats=7 --json=ops.json

For each layer: the forward pass, the input gradient and the kernel gradient, each jitted on its own, as XLA's
convolution (``lax.conv_general_dilated`` and its VJP: ``conv_impl=xla``, columns ``*_xla_ms``) and as the fast
path of jaxssl/ops/conv.py (``*_fast_ms``): the gathered-window matmuls, also where 'auto' would not take them,
so the table shows both sides of each choice; a strided layer's input gradient as 'im2col' computes it (1x1:
one matmul spread out by zeros; k x k: XLA's). oneDNN's times through jaxssl's custom calls (``*_onednn_ms``)
come beside them where those can be built, and PyTorch's (oneDNN, channels_last; in a process of its own) where
torch is installed. Times are the minimum of --repeats runs after one warm-up. Every fast and oneDNN result is
checked against XLA's before it is timed. ``im2col_takes`` and ``auto_takes`` say which path ``conv_impl=im2col``
and ``conv_impl=auto`` run for each pass.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import time
import types

from absl import flags, logging

from jaxssl import cli
from jaxssl.bench import common

# name: (images, height = width, input channels, output channels, kernel, stride). Batches are a rotation step's:
# CifarNet at batch 256 sees 1,024 images, ResNet-18 at batch 64 sees 256.
LAYERS = {
    'cifarnet_conv1': (1024, 28, 1, 64, 5, 1),
    'cifarnet_conv2': (1024, 14, 64, 64, 5, 1),
    'resnet_stem': (256, 28, 1, 64, 3, 1),
    'resnet_stage1': (256, 28, 64, 64, 3, 1),
    'resnet_stage2_down': (256, 28, 64, 128, 3, 2),
    'resnet_stage2_shortcut': (256, 28, 64, 128, 1, 2),
    'resnet_stage2': (256, 14, 128, 128, 3, 1),
    'resnet_stage3_down': (256, 14, 128, 256, 3, 2),
    'resnet_stage3': (256, 7, 256, 256, 3, 1),
    'resnet_stage4': (256, 4, 512, 512, 3, 1),
}


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> types.SimpleNamespace:
  """The command's flags, defined when it runs (not at import: the other benches and jaxssl.main define some of
  the same names, and tests import them all in one process)."""
  return types.SimpleNamespace(
      layers=flags.DEFINE_list('layers', list(LAYERS), f'Layers to time, from: {", ".join(LAYERS)}.',
                               flag_values=flag_values),
      batch=flags.DEFINE_integer('batch', 0, 'Images per pass (0: each layer\'s rotation-step batch, see LAYERS).',
                                 flag_values=flag_values),
      repeats=flags.DEFINE_integer('repeats', 5, 'Timed runs per pass; the minimum is reported.',
                                   flag_values=flag_values),
      torch=flags.DEFINE_bool('torch', True, 'Also time PyTorch\'s layer (in a process of its own), when torch is '
                              'installed.', flag_values=flag_values),
      json=flags.DEFINE_string('json', '', 'Also write the rows to this JSON file.', flag_values=flag_values))


def _time(fn, *args, repeats: int) -> float:
  import jax  # pylint: disable=import-outside-toplevel
  jax.block_until_ready(fn(*args))
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return 1e3 * best


def measure_layer(n: int, hw: int, cin: int, cout: int, k: int, stride: int, *, repeats: int) -> dict:
  """Milliseconds per pass for XLA and for jaxssl's fast path, each checked against XLA's result first."""
  # The bench times the fast path's parts one by one:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jax import lax  # pylint: disable=import-outside-toplevel
  from jaxssl.ops import conv as ops  # pylint: disable=import-outside-toplevel
  from jaxssl.ops import onednn  # pylint: disable=import-outside-toplevel

  x = jax.random.normal(jax.random.PRNGKey(0), (n, hw, hw, cin))
  w = jax.random.normal(jax.random.PRNGKey(1), (k, k, cin, cout)) * (2.0 / (k * k * cin)) ** 0.5
  st = (stride, stride)
  pad = tuple(tuple(p) for p in lax.padtype_to_pads((hw, hw), (k, k), st, 'SAME'))
  bb = ops.BLOCK_BYTES
  xla_fwd = jax.jit(lambda x, w: ops.lax_conv(x, w, st, pad))
  y = xla_fwd(x, w)
  g = jax.random.normal(jax.random.PRNGKey(2), y.shape)
  xla_dx = jax.jit(lambda x, w, g: jax.vjp(lambda a: ops.lax_conv(a, w, st, pad), x)[1](g)[0])
  xla_dw = jax.jit(lambda x, w, g: jax.vjp(lambda b: ops.lax_conv(x, b, st, pad), w)[1](g)[0])

  def fast_dx(x, w, g):
    if stride == 1 and k > 1:  # the gathered path, whatever 'auto' would choose
      flipped = tuple((k - 1 - lo, k - 1 - hi) for lo, hi in pad)
      return ops.gathered_conv(g, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2), (1, 1), flipped, bb)
    return ops.input_grad(x, w, g, st, pad, bb)

  passes = {
      'fwd': (xla_fwd, jax.jit(lambda x, w: ops.gathered_conv(x, w, st, pad, bb)),
              jax.jit(lambda x, w: onednn.conv_forward(x, w, st, pad)), (x, w)),
      'dx': (xla_dx, jax.jit(fast_dx), jax.jit(lambda x, w, g: onednn.conv_input_grad(g, w, x.shape, st, pad)),
             (x, w, g)),
      'dw': (xla_dw, jax.jit(lambda x, w, g: ops.kernel_grad(jnp.pad(x, ((0, 0), *pad, (0, 0))), g, w.shape, st, bb)),
             jax.jit(lambda x, w, g: onednn.conv_kernel_grad(x, g, w.shape, st, pad)), (x, w, g)),
  }
  if not onednn.available():
    passes = {name: (xla_fn, fast_fn, None, args) for name, (xla_fn, fast_fn, _, args) in passes.items()}
  row = {'layer_shape': f'{n}x{hw}x{hw}x{cin} -> {cout}, {k}x{k}/{stride}',
         'gflop_per_pass': round(2 * y.size * k * k * cin / 1e9, 2)}
  for name, (xla_fn, fast_fn, onednn_fn, args) in passes.items():
    ref = xla_fn(*args)
    scale = float(jnp.abs(ref).max()) or 1.0
    for label, fn in (('fast', fast_fn), ('onednn', onednn_fn)):
      if fn is None:
        continue
      err = float(jnp.abs(fn(*args) - ref).max()) / scale
      if not np.isfinite(err) or err > 1e-4:
        raise AssertionError(f'{label} {name} differs from XLA\'s by {err:.2e} (relative to its largest value)')
    row[f'{name}_xla_ms'] = _ms(_time(xla_fn, *args, repeats=repeats))
    row[f'{name}_fast_ms'] = _ms(_time(fast_fn, *args, repeats=repeats))
    if onednn_fn is not None:
      row[f'{name}_onednn_ms'] = _ms(_time(onednn_fn, *args, repeats=repeats))
  row['im2col_takes'] = _im2col_takes(k, stride)
  row['auto_takes'] = 'fwd:onednn dx:onednn dw:onednn' if onednn.available() else row['im2col_takes']
  return row


def _ms(ms: float) -> float:
  """Milliseconds to one decimal, or to three significant digits below 10 ms (one decimal rounded a small
  layer's 0.04 ms pass to 0)."""
  return round(ms, 1) if ms >= 10 else float(f'{ms:.3g}')


def _im2col_takes(k: int, stride: int) -> str:
  """What ``conv_impl=im2col`` runs for each pass of a k x k / stride layer."""
  pointwise = k == 1
  takes = {'fwd': 'xla' if pointwise else 'gathered',
           'dx': ('spread' if pointwise else 'xla') if stride != 1 else 'xla' if pointwise else 'gathered',
           'dw': 'matmul' if pointwise else 'gathered'}
  return ' '.join(f'{p}:{v}' for p, v in takes.items())


def measure_torch(n: int, hw: int, cin: int, cout: int, k: int, stride: int, *, repeats: int) -> dict:
  """PyTorch's forward and (input + kernel) gradient milliseconds for the layer; {} without torch. Its backward
  computes both gradients in one call, so they are timed together."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return {}
  import os  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  conv = torch.nn.Conv2d(cin, cout, k, stride, k // 2, bias=False).to(memory_format=torch.channels_last)
  x = torch.randn(n, cin, hw, hw).contiguous(memory_format=torch.channels_last).requires_grad_(True)
  g = torch.randn_like(conv(x))

  def best(fn):
    fn()
    out = float('inf')
    for _ in range(repeats):
      t0 = time.perf_counter()
      fn()
      out = min(out, time.perf_counter() - t0)
    return 1e3 * out

  with torch.no_grad():
    fwd = best(lambda: conv(x))
  y = conv(x)
  both = best(lambda: torch.autograd.grad(y, [x, conv.weight], g, retain_graph=True))
  return {'torch_fwd_ms': _ms(fwd), 'torch_dx_plus_dw_ms': _ms(both)}


def main(argv, *, opts: types.SimpleNamespace):
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])} (flags are --name=value; --help lists them)')
  unknown = [name for name in opts.layers.value if name not in LAYERS]
  if unknown:
    cli.fail(f'unknown layer(s) {", ".join(unknown)}; choose from: {", ".join(LAYERS)}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=import-outside-toplevel
  repeats = opts.repeats.value
  print(f'# {jax.devices()[0].device_kind}, jax {jax.__version__}; ms per pass, min of {repeats}', flush=True)
  rows = []
  # PyTorch runs in a process of its own: beside JAX's buffers and threads its steps ran up to 1.5x slower.
  torch_pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn'))
  for name in opts.layers.value:
    n, hw, cin, cout, k, stride = LAYERS[name]
    n = opts.batch.value or n
    row = {'layer': name, **measure_layer(n, hw, cin, cout, k, stride, repeats=repeats)}
    if opts.torch.value:
      row.update(torch_pool.submit(measure_torch, n, hw, cin, cout, k, stride, repeats=repeats).result())
    rows.append(row)
    print(json.dumps(row), flush=True)
  torch_pool.shutdown()
  common.write_json(opts.json.value, rows)



if __name__ == '__main__':
  cli.run(define_flags, main)
