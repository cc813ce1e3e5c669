"""oneDNN's CPU convolutions and batch norm inside jitted JAX code, as XLA FFI custom calls
(csrc/onednn_conv.cc; the batch norm's use is in norm.py).

Why. oneDNN's convolutions (the kernels PyTorch runs on the CPU) read their windows straight from the NHWC
input. On the 2-core machine jaxssl is developed on, XLA's CPU convolutions were 1.5-2.7x slower than oneDNN's
on CifarNet's and ResNet-18's layers (forward; up to 17x for kernel gradients), and the gathered-window matmuls
of conv.py, which write a copy of the input per kernel tap, 1.5-2.2x slower (README, "Speed"; docs/benchmarks.md).

How. The first use compiles csrc/onednn_conv.cc (a few seconds, C++17) against the oneDNN the environment has:
the ``onednn-cpu-gomp`` / ``onednn-devel-cpu-gomp`` wheels (jaxssl's ``cpu`` extra, Linux x86-64), the directory
in ``$JAXSSL_ONEDNN_ROOT`` (``include/`` and ``lib/``), or Debian's ``libdnnl-dev``. The library goes to
``$JAXSSL_CACHE_DIR`` (default ``~/.cache/jaxssl``) and is reused. Since it runs inside every training process,
the cache is guarded (:func:`_build`): the library is named by a hash of everything its build read (source,
compiler, oneDNN and jax's FFI headers, flags), written atomically with its sha256 beside it and checked against
that before every load; a mismatch or a failed load rebuilds it, and a cache directory that another user owns or
could write to is refused. ``available()`` says whether this worked and ``unavailable_reason()`` why not; the
setting 'auto' (dispatch.py) then falls back to the gathered path. Convolutions take float32, or bfloat16 where
``supports(jnp.bfloat16)`` (oneDNN has fast bf16 kernels for this CPU: AVX512-BF16 or AMX; products accumulate
in float32); batch norm the same two types (statistics and parameters float32).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tempfile

import jax
import numpy as np

_SOURCE = pathlib.Path(__file__).with_name('csrc') / 'onednn_conv.cc'
_TARGETS = {'forward': 'JaxsslOnednnConvForward', 'input_grad': 'JaxsslOnednnConvInputGrad',
            'kernel_grad': 'JaxsslOnednnConvKernelGrad', 'bn_forward': 'JaxsslOnednnBnForward',
            'bn_backward': 'JaxsslOnednnBnBackward'}
# Batch norm's fusions, as csrc/onednn_conv.cc numbers them.
BN_FUSE = {'none': 0, 'relu': 1}
# The data types the calls take, as csrc/onednn_conv.cc numbers them.
_TYPES = {np.dtype(np.float32): 0, np.dtype(jax.numpy.bfloat16): 1}


def _roots() -> list[pathlib.Path]:
  roots = [os.environ.get('JAXSSL_ONEDNN_ROOT'), sys.prefix, '/usr', '/usr/local']
  return [pathlib.Path(r) for r in roots if r]


def _find_onednn() -> tuple[pathlib.Path, pathlib.Path]:
  """(include dir, lib dir) of a oneDNN with its C++ header and shared library."""
  for root in _roots():
    include = root / 'include'
    if not (include / 'oneapi' / 'dnnl' / 'dnnl.hpp').exists():
      continue
    for lib in (root / 'lib', root / 'lib64', root / 'lib' / 'x86_64-linux-gnu'):
      if (lib / 'libdnnl.so').exists():
        return include, lib
  raise RuntimeError("no oneDNN found (looked in $JAXSSL_ONEDNN_ROOT, the Python environment, /usr, /usr/local); "
                     "pip install -e '.[cpu]' in jaxssl's checkout installs one (Linux x86-64)")


def _compiler() -> str:
  for cxx in (os.environ.get('CXX'), 'g++', 'c++', 'clang++'):
    if cxx and shutil.which(cxx):
      return cxx
  raise RuntimeError('no C++ compiler found (set $CXX or install g++)')


_FLAGS = ('-O2', '-std=c++17', '-shared', '-fPIC', '-w')
_SHA_SUFFIX = '.sha256'


def cache_dir() -> pathlib.Path:
  """``$JAXSSL_CACHE_DIR`` (default ``~/.cache/jaxssl``), created private; refused unless this user owns it and no
  one else can write to it, since a library found there is loaded into the process: one planted there would run
  inside a training run."""
  return private_dir(pathlib.Path(os.environ.get('JAXSSL_CACHE_DIR') or pathlib.Path.home() / '.cache' / 'jaxssl'),
                     'the oneDNN library cache', 'a library')


def private_dir(path: pathlib.Path, what: str, planted: str) -> pathlib.Path:
  """``path`` created private (0700, parents as needed) and returned; RuntimeError (one line) where it is not this
  user's own: another user's symbolic link, a folder of another owner, or one others can write to, since
  ``planted`` (code) found there would run inside this process. A link of the user's own is followed."""
  path.mkdir(mode=0o700, parents=True, exist_ok=True)
  link, st = path.lstat(), path.stat()
  problems = []
  if stat.S_ISLNK(link.st_mode) and link.st_uid != os.getuid():
    problems.append(f'it is a symbolic link of uid {link.st_uid}, not yours (uid {os.getuid()})')
  if st.st_uid != os.getuid():
    problems.append(f'it is owned by uid {st.st_uid}, not by you (uid {os.getuid()})')
  if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
    problems.append(f'its mode {stat.S_IMODE(st.st_mode):o} lets other users write to it')
  if problems:
    raise RuntimeError(f'refusing {what} {path}: {" and ".join(problems)}, so {planted} another user planted there '
                       'would run inside this process; set JAXSSL_CACHE_DIR to a directory of your own, or make this '
                       f'one yours with `chown $USER {path}; chmod go-w {path}`')
  return path


def _cache_key(cxx: str, include: pathlib.Path, lib: pathlib.Path, jax_include: pathlib.Path) -> str:
  """A hash of everything the build reads, so that a change to any of them builds a new library instead of
  loading one made for other headers (a oneDNN or jaxlib upgraded in place, another compiler)."""
  version = subprocess.run([cxx, '--version'], capture_output=True, text=True, check=False).stdout
  headers = [include / 'oneapi' / 'dnnl' / f'dnnl_{h}.h' for h in ('version', 'config')]
  headers += sorted((jax_include / 'xla' / 'ffi' / 'api').glob('*.h'))
  key = hashlib.sha256()
  for part in (_SOURCE.read_bytes(), os.path.realpath(shutil.which(cxx) or cxx), version, jax.__version__,
               ' '.join(_FLAGS), str(include), os.path.realpath(lib / 'libdnnl.so'),
               *(f'{h}\n'.encode() + (h.read_bytes() if h.is_file() else b'(absent)') for h in headers)):
    part = part if isinstance(part, bytes) else part.encode()
    key.update(len(part).to_bytes(8, 'little') + part)  # length-prefixed: no two lists hash alike
  return key.hexdigest()[:16]


def _sha256(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def _intact(target: pathlib.Path) -> bool:
  """Whether ``target`` is a regular file whose sha256 is the one recorded when it was built: a truncated copy
  (which crashed every run with a bus error when loaded), a file planted under its name or one without a record
  is not."""
  try:
    if not stat.S_ISREG(os.lstat(target).st_mode):
      return False
    return _sha256(target) == (target.parent / (target.name + _SHA_SUFFIX)).read_text().strip()
  except OSError:
    return False


def _compile(target: pathlib.Path, cxx: str, include: pathlib.Path, lib: pathlib.Path, jax_include) -> None:
  """Builds into a private temporary folder beside ``target``, records the library's sha256, then renames both
  into place (atomic: concurrent builds, or a build killed half-way, never leave a partial library)."""
  with tempfile.TemporaryDirectory(dir=target.parent, prefix='.build-') as tmp:
    out = pathlib.Path(tmp) / target.name
    cmd = [cxx, *_FLAGS, f'-I{jax_include}', f'-I{include}', str(_SOURCE), f'-L{lib}', '-ldnnl',
           f'-Wl,-rpath,{lib}', '-o', str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
      raise RuntimeError(f'compiling {_SOURCE.name} failed: {" ".join(cmd)}\n{done.stderr[-2000:]}')
    record = out.with_name(out.name + _SHA_SUFFIX)
    record.write_text(_sha256(out) + '\n')
    os.replace(out, target)
    os.replace(record, target.with_name(target.name + _SHA_SUFFIX))


def _toolchain() -> tuple[str, pathlib.Path, pathlib.Path, pathlib.Path]:
  """(compiler, oneDNN include dir, oneDNN lib dir, jax's FFI include dir): what a build uses."""
  include, lib = _find_onednn()
  return _compiler(), include, lib, pathlib.Path(jax.ffi.include_dir())


def library_path() -> pathlib.Path:
  """Where the library for this toolchain lives in :func:`cache_dir` (it may not be built yet)."""
  return cache_dir() / f'libjaxssl_onednn_conv-{_cache_key(*_toolchain())}.so'


def _build(rebuild: bool = False) -> pathlib.Path:
  """:func:`library_path`, compiled first where that library is absent or not intact (or ``rebuild``)."""
  target = library_path()
  if rebuild or not _intact(target):
    _compile(target, *_toolchain())
  return target


@functools.lru_cache(maxsize=None)
def _library() -> ctypes.CDLL:
  """The library, loaded; one that passes its checksum but fails to load is rebuilt once."""
  try:
    return ctypes.CDLL(str(_build()))
  except OSError as e:
    first = e
  path = _build(rebuild=True)
  try:
    return ctypes.CDLL(str(path))
  except OSError as e:
    raise RuntimeError(f'{path} does not load even rebuilt ({e}; before rebuilding: {first})') from e


@functools.lru_cache(maxsize=None)
def _load() -> str | None:
  """Builds and registers the custom calls once; None if that worked, else why not."""
  if os.environ.get('JAXSSL_ONEDNN', '1') == '0':
    return 'disabled by JAXSSL_ONEDNN=0'
  try:
    lib = _library()
    for name, symbol in _TARGETS.items():
      jax.ffi.register_ffi_target(f'jaxssl_onednn_conv_{name}', jax.ffi.pycapsule(getattr(lib, symbol)),
                                  platform='cpu')
  except (RuntimeError, OSError) as e:
    return str(e)
  return None


def available() -> bool:
  return _load() is None


def unavailable_reason() -> str | None:
  return _load()


def _attrs(stride, padding) -> dict:
  (sh, sw), ((pt, pb), (pl, pr)) = stride, padding
  return {k: np.int64(v) for k, v in dict(stride_h=sh, stride_w=sw, pad_top=pt, pad_bottom=pb, pad_left=pl,
                                          pad_right=pr).items()}


def _ffi(name: str, results, *args, **attrs):
  """One of the library's custom calls (``_TARGETS``), or why it cannot be made."""
  if _load() is not None:
    raise RuntimeError(f'oneDNN is unavailable: {_load()}')
  # Under jax.vmap (a batch of models: several fine-tuning cells in one step) each model's convolution is one
  # call, in a loop: the library's primitives take one image batch and one kernel.
  return jax.ffi.ffi_call(f'jaxssl_onednn_conv_{name}', results, vmap_method='sequential')(*args, **attrs)


def _call(name: str, shape, dtype, *args, stride, padding):
  return _ffi(name, jax.ShapeDtypeStruct(tuple(shape), dtype), *args, **_attrs(stride, padding))


def conv_forward(x: jax.Array, w: jax.Array, stride, padding) -> jax.Array:
  """NHWC ``x`` (float32), HWIO ``w``, explicit non-negative ((top, bottom), (left, right)) padding."""
  ho, wo = ((n + lo + hi - k) // s + 1 for n, k, s, (lo, hi) in zip(x.shape[1:3], w.shape[:2], stride, padding))
  return _call('forward', (x.shape[0], ho, wo, w.shape[3]), x.dtype, x, w, stride=stride, padding=padding)


def conv_input_grad(g: jax.Array, w: jax.Array, x_shape, stride, padding) -> jax.Array:
  return _call('input_grad', x_shape, g.dtype, g, w, stride=stride, padding=padding)


def conv_kernel_grad(x: jax.Array, g: jax.Array, w_shape, stride, padding) -> jax.Array:
  return _call('kernel_grad', w_shape, g.dtype, x, g, stride=stride, padding=padding)


@functools.lru_cache(maxsize=None)
def bn_plan(rows: int, channels: int, fuse: str, dtype=np.float32) -> tuple[int, str]:
  """(workspace bytes, oneDNN's implementation name) of a training-mode batch norm over ``rows`` x ``channels``
  of ``dtype`` (float32 or bfloat16) with fusion ``fuse`` ('none', 'relu'); workspace -1 where oneDNN has no
  such primitive."""
  if _load() is not None:
    raise RuntimeError(f'oneDNN is unavailable: {_load()}')
  if np.dtype(dtype) not in _TYPES:
    return -1, ''
  fn = _library().JaxsslOnednnBnWorkspaceBytes
  fn.restype, fn.argtypes = ctypes.c_int64, [ctypes.c_int64] * 4 + [ctypes.c_char_p, ctypes.c_int64]
  name = ctypes.create_string_buffer(128)
  size = fn(rows, channels, BN_FUSE[fuse], _TYPES[np.dtype(dtype)], name, len(name))
  return int(size), name.value.decode()


@functools.lru_cache(maxsize=None)
def conv_kernels(dtype) -> str:
  """oneDNN's implementations of a 3x3 convolution's forward, input and kernel gradients in ``dtype``
  ("fwd|bwd_d|bwd_w"), '' for a type the calls do not take."""
  dtype = np.dtype(dtype)
  if dtype not in _TYPES or _load() is not None:
    return ''
  fn = _library().JaxsslOnednnConvImpl
  fn.restype, fn.argtypes = ctypes.c_int64, [ctypes.c_int64, ctypes.c_char_p, ctypes.c_int64]
  out = ctypes.create_string_buffer(256)
  return out.value.decode() if fn(_TYPES[dtype], out, len(out)) == 0 else ''


def supports(dtype) -> bool:
  """Whether oneDNN convolves ``dtype`` here with its fast kernels (not its reference loops)."""
  kernels = conv_kernels(dtype)
  return bool(kernels) and not any(k.startswith('ref') for k in kernels.split('|'))


def _bn_call(name: str, results, *args, eps: float, fuse: str):
  return _ffi(name, results, *args, eps=np.float32(eps), fuse=np.int64(BN_FUSE[fuse]))


def bn_forward(x, scale, shift, *, eps: float, fuse: str):
  """Training-mode batch norm of channels-last ``x`` (float32 or bfloat16; float32 ``scale`` and ``shift``)
  over all but its last axis, then (``fuse='relu'``) a ReLU: (y in ``x``'s dtype, float32 mean and biased
  variance, workspace for ``bn_backward``: the ReLU's mask, 1 bit per element)."""
  c = x.shape[-1]
  ws, _ = bn_plan(x.size // c, c, fuse, x.dtype)
  if ws < 0:
    raise RuntimeError(f'oneDNN has no batch norm for {x.shape} with fuse={fuse!r}')
  f32 = jax.numpy.float32
  results = (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((c,), f32),
             jax.ShapeDtypeStruct((c,), f32), jax.ShapeDtypeStruct((ws,), jax.numpy.uint8))
  return _bn_call('bn_forward', results, x, scale, shift, eps=eps, fuse=fuse)


def bn_backward(x, dy, scale, mean, var, workspace, *, eps: float, fuse: str):
  """(dx, d scale, d shift) of ``bn_forward``."""
  f32 = jax.numpy.float32
  c = x.shape[-1]
  results = (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct((c,), f32),
             jax.ShapeDtypeStruct((c,), f32))
  return _bn_call('bn_backward', results, x, dy, scale, mean, var, workspace, eps=eps, fuse=fuse)
