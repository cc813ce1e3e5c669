"""The PyTorch side of ``python -m jaxssl.bench``: the same backbone, head, pretext batch and optimizer step,
timed the same way, so the two images/s figures can be compared in one run.

Only imported when torch is installed (``pip install torch==2.13.0`` gets the CPU build); jaxssl never needs
it. Models are written here from their papers, with the shapes of jaxssl's (jaxssl/models): CifarNet (5x5
convs, 3x3/2 max pools, fc 384 and 192) and the CIFAR-style ResNets (3x3 stem, basic blocks, projection
shortcuts). PyTorch runs eagerly in channels_last, the layout its CPU convolutions (oneDNN) are fastest in.
CifarNet's pools and flatten are jaxssl's exactly (SAME 3x3/2 windows, features flattened height, width, channel),
so jaxssl's weights load into it (:func:`load_jax_params`) and give jaxssl's outputs.

SimCLR (task ``simclr``, CifarNet) is the whole of jaxssl's step (jaxssl/tasks/contrastive.py): the two views of
the batch jaxssl's pipeline made (uint8, normalized inside the step as jaxssl does), folded into the example axis
with the views of an image adjacent; the projector (Linear without bias, BatchNorm, ReLU, Linear); NT-Xent over
the whole batch with jaxssl's temperature and weights; and LARS (:class:`LARS`, optax.lars step for step).
``dtype='bfloat16'`` runs the forward pass under ``torch.autocast('cpu', torch.bfloat16)`` (float32 parameters,
bf16 convolutions and matmuls: PyTorch's mixed precision, as jaxssl's ``model.options.dtype`` is flax's).
"""

from __future__ import annotations

import statistics

import torch
from torch import nn

import numpy as np

from jaxssl.bench import common

SUPPORTED_MODELS = ('cifarnet', 'resnet20', 'resnet18_cifar')
# task kind -> (images fed to the backbone per source image, classes of its head; simclr: none, a projector)
SUPPORTED_TASKS = {'rotation': (4, 4), 'classify': (1, 10), 'simclr': (2, 0)}
# tasks whose twin exists for some models only
TASK_MODELS = {'simclr': ('cifarnet',)}


def _same_max_pool(size: int) -> nn.Module:
  """jaxssl's 3x3/2 max pool with SAME padding on a side of ``size``: ceil(size / 2) windows, the padding (-inf)
  split low = total // 2. Even sizes pad one at the end only (ceil_mode's window past the edge), odd sizes one on
  each side."""
  return nn.MaxPool2d(3, 2, padding=1) if size % 2 else nn.MaxPool2d(3, 2, ceil_mode=True)


class CifarNet(nn.Module):
  """jaxssl's CifarNet (jaxssl/models/cifarnet.py) layer for layer, so both frameworks run the same FLOPs."""

  def __init__(self, in_ch: int, hw: int, num_outputs: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_ch, 64, 5, padding=2)
    self.conv2 = nn.Conv2d(64, 64, 5, padding=2)
    self.pool1, self.pool2 = _same_max_pool(hw), _same_max_pool(-(-hw // 2))
    side = -(-(-(-hw // 2)) // 2)
    self.fc1 = nn.Linear(side * side * 64, 384)
    self.fc2 = nn.Linear(384, 192)
    self.head = nn.Linear(192, num_outputs)

  def forward(self, x):
    h = self.pool1(torch.relu(self.conv1(x)))
    h = self.pool2(torch.relu(self.conv2(h)))
    # (height, width, channel) order, as jaxssl flattens; a view of channels_last memory, no copy
    h = torch.relu(self.fc1(h.permute(0, 2, 3, 1).flatten(1)))
    return self.head(torch.relu(self.fc2(h)))


class Projector(nn.Module):
  """jaxssl's projector (jaxssl/tasks/contrastive.py MLP): Linear without bias, BatchNorm (flax momentum 0.9 is
  PyTorch's 0.1), ReLU, Linear."""

  def __init__(self, in_features: int, hidden: int, out_features: int):
    super().__init__()
    self.hidden = nn.Linear(in_features, hidden, bias=False)
    self.norm = nn.BatchNorm1d(hidden, eps=1e-5, momentum=0.1)
    self.out = nn.Linear(hidden, out_features)

  def forward(self, h):
    return self.out(torch.relu(self.norm(self.hidden(h))))


def nt_xent(z1, z2, temperature: float, weight):
  """jaxssl's NT-Xent (jaxssl/tasks/contrastive.py nt_xent), the same masks and weighting."""
  n = z1.shape[0]
  z = nn.functional.normalize(torch.cat([z1, z2]).float(), dim=1, eps=1e-12)
  logits = z @ z.T / temperature
  w = torch.cat([weight, weight]).float()
  idx = torch.arange(2 * n, device=z.device)
  positive = (idx + n) % (2 * n)
  is_positive = idx[None, :] == positive[:, None]
  candidate = ((w[None, :] > 0) & (idx[None, :] != idx[:, None])) | is_positive
  logits = logits.masked_fill(~candidate, float('-inf'))
  per_anchor = torch.logsumexp(logits, dim=1) - logits[idx, positive]
  return (per_anchor * w).sum() / w.sum().clamp_min(1e-8)


class LARS:
  """optax.lars as jaxssl's optimizer builds it (jaxssl/train/optim.py): on kernels (ndim > 1) u = g + wd * w
  scaled by the trust ratio trust_coefficient * |w| / (|u| + eps) (1 where either norm is 0); biases and
  BatchNorm take g as it is; then momentum on -lr * u (optax.trace: buf = -lr * u + momentum * buf; the update is
  buf, or -lr * u + momentum * buf with nesterov)."""

  def __init__(self, params, *, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
               trust_coefficient: float = 1e-3, nesterov: bool = False, eps: float = 0.0):
    self.params = [p for p in params if p.requires_grad]
    self.bufs = [torch.zeros_like(p) for p in self.params]
    self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
    self.trust_coefficient, self.nesterov, self.eps = trust_coefficient, nesterov, eps

  def zero_grad(self, set_to_none: bool = True) -> None:
    """As torch.optim's."""
    for p in self.params:
      if set_to_none:
        p.grad = None
      elif p.grad is not None:
        p.grad.zero_()

  @torch.no_grad()
  def step(self) -> None:
    """One update from the parameters' gradients."""
    for p, buf in zip(self.params, self.bufs):
      if p.grad is None:
        continue
      u = p.grad
      if p.ndim > 1:
        if self.weight_decay:
          u = u.add(p, alpha=self.weight_decay)
        p_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(u)
        ratio = self.trust_coefficient * p_norm / (u_norm + self.eps)
        u = u * torch.where((p_norm == 0) | (u_norm == 0), torch.ones_like(ratio), ratio)
      buf.mul_(self.momentum).add_(u, alpha=-self.lr)
      if self.nesterov:
        p.add_(buf, alpha=self.momentum).add_(u, alpha=-self.lr)
      else:
        p.add_(buf)


def load_jax_params(net: nn.Module, params: dict) -> None:
  """jaxssl's CifarNet (and SimCLR projector) weights into the twin: ``params`` {path tuple: array}, paths as
  jaxssl.trees.flat_paths names them ('backbone', 'conv1', 'kernel'), ('heads', <task>, 'projector', ...)."""
  modules = dict(net.named_modules())
  with torch.no_grad():
    for path, value in params.items():
      if path[0] == 'backbone':
        name = '.'.join(path[1:-1])
      elif path[0] == 'heads' and path[2:3] == ('projector',):
        name = '.'.join(('head',) + path[3:-1])
      else:
        raise ValueError(f'no place in the PyTorch twin for {"/".join(path)}')
      value = torch.tensor(np.asarray(value, np.float32))
      if path[-1] == 'kernel':
        value = value.permute(3, 2, 0, 1) if value.ndim == 4 else value.T   # HWIO -> OIHW; [in, out] -> [out, in]
        target = modules[name].weight
      elif path[-1] == 'scale':
        target = modules[name].weight
      else:
        target = getattr(modules[name], path[-1])
      if tuple(target.shape) != tuple(value.shape):
        raise ValueError(f'{"/".join(path)}: jaxssl {tuple(value.shape)}, PyTorch {tuple(target.shape)}')
      target.copy_(value)


class _Block(nn.Module):

  def __init__(self, cin: int, c: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(c)
    self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(c)
    self.short = (nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))
                  if stride != 1 or cin != c else nn.Identity())

  def forward(self, x):
    h = torch.relu(self.bn1(self.conv1(x)))
    return torch.relu(self.bn2(self.conv2(h)) + self.short(x))


class CifarResNet(nn.Module):
  """jaxssl's CIFAR-style ResNets (jaxssl/models/resnet.py): 3x3 stem, basic blocks, global average pool."""

  def __init__(self, in_ch: int, sizes, widths, num_outputs: int):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(in_ch, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
    blocks, cin = [], widths[0]
    for i, (n, c) in enumerate(zip(sizes, widths)):
      for j in range(n):
        blocks.append(_Block(cin, c, 2 if i > 0 and j == 0 else 1))
        cin = c
    self.blocks = nn.Sequential(*blocks)
    self.head = nn.Linear(cin, num_outputs)

  def forward(self, x):
    return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def build(model: str, in_ch: int, hw: int, num_outputs: int) -> nn.Module:
  if model == 'cifarnet':
    return CifarNet(in_ch, hw, num_outputs)
  if model == 'resnet20':
    return CifarResNet(in_ch, (3, 3, 3), (16, 32, 64), num_outputs)
  if model == 'resnet18_cifar':
    return CifarResNet(in_ch, (2, 2, 2, 2), (64, 128, 256, 512), num_outputs)
  raise ValueError(f'no PyTorch twin for model {model!r}; have: {", ".join(SUPPORTED_MODELS)}')


DTYPES = ('float32', 'bfloat16')


def make_step(model: str, task: str, batch_size: int, input_shape, *, lr: float = 0.01,
              threads: int | None = None, dtype: str = 'float32', device: str = 'cpu', options: dict | None = None,
              batch: dict | None = None):
  """One step (forward, loss, backward, update) on ``batch_size`` source images on ``device`` ('cpu', or 'cuda'
  for jaxssl/bench/gpu.py), as a function that returns when the step is done (the loss is read back).

  rotation, classify: cross-entropy and SGD (momentum 0.9, weight decay 5e-4) on random inputs. simclr: jaxssl's
  SimCLR step (see the module docstring); ``options`` holds the task's ``mean``, ``std``, ``temperature``,
  ``proj_hidden``, ``proj_dim`` and the optimizer's ``optim`` ({'name': 'lars' or 'sgd', 'lr', 'momentum',
  'nesterov', 'weight_decay', 'trust_coefficient'}); ``batch`` is the task's batch from jaxssl's pipeline
  ({'image': uint8 [B, 2, H, W, C], 'weight': [B]}; random views when None), replaced later by the step's
  ``set_batch``. The returned step has ``net`` (the module) for tests."""
  if task not in SUPPORTED_TASKS:
    raise ValueError(f'no PyTorch twin for task {task!r}; have: {", ".join(SUPPORTED_TASKS)}')
  if model not in TASK_MODELS.get(task, SUPPORTED_MODELS):
    raise ValueError(f'no PyTorch twin for task {task!r} with model {model!r}; have: '
                     f'{", ".join(TASK_MODELS.get(task, SUPPORTED_MODELS))}')
  if dtype not in DTYPES:
    raise ValueError(f'no PyTorch twin in dtype {dtype!r}; have: {", ".join(DTYPES)}')
  if threads:
    torch.set_num_threads(threads)
  if task == 'simclr':
    return _simclr_step(model, batch_size, input_shape, options or {}, batch, dtype=dtype, device=device)
  per_image, classes = SUPPORTED_TASKS[task]
  h, w, c = input_shape
  net = build(model, c, h, classes).to(device).to(memory_format=torch.channels_last)
  opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
  gen = torch.Generator().manual_seed(0)
  x = torch.randn(batch_size * per_image, c, h, w, generator=gen).to(device).contiguous(
      memory_format=torch.channels_last)
  y = torch.randint(0, classes, (batch_size * per_image,), generator=gen).to(device)
  loss_fn = nn.CrossEntropyLoss()
  net.train()

  def step() -> float:
    opt.zero_grad(set_to_none=True)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=dtype == 'bfloat16'):
      loss = loss_fn(net(x).float(), y)
    loss.backward()
    opt.step()
    return loss.item()

  step.net = net
  return step


def _simclr_step(model: str, batch_size: int, input_shape, options: dict, batch, *, dtype: str, device: str):
  h, w, c = input_shape
  net = build(model, c, h, 1)
  net.head = Projector(net.head.in_features, int(options.get('proj_hidden', 512)), int(options.get('proj_dim', 128)))
  net = net.to(device).to(memory_format=torch.channels_last)
  o = {'name': 'lars', 'lr': 0.1, 'momentum': 0.9, 'nesterov': False, 'weight_decay': 0.0,
       'trust_coefficient': 1e-3, **options.get('optim', {})}
  if o['name'] == 'lars':
    opt = LARS(net.parameters(), lr=o['lr'], momentum=o['momentum'], weight_decay=o['weight_decay'],
               trust_coefficient=o['trust_coefficient'], nesterov=o['nesterov'])
  else:  # the bench says that the optimizer differs
    opt = torch.optim.SGD(net.parameters(), lr=o['lr'], momentum=o['momentum'] or 0.0, nesterov=o['nesterov'],
                          weight_decay=o['weight_decay'])
  mean = torch.as_tensor(np.asarray(options.get('mean', 0.0), np.float32), device=device)
  std = torch.as_tensor(np.asarray(options.get('std', 1.0), np.float32), device=device)
  temperature = float(options.get('temperature', 0.5))
  data = {}

  def set_batch(new: dict) -> None:
    data['image'] = torch.as_tensor(np.ascontiguousarray(new['image'], np.uint8)).to(device)
    data['weight'] = torch.as_tensor(np.asarray(new['weight'], np.float32)).to(device)

  if batch is None:
    rng = np.random.default_rng(0)
    batch = {'image': rng.integers(0, 256, (batch_size, 2, h, w, c), np.uint8), 'weight': np.ones(batch_size)}
  set_batch(batch)
  net.train()

  def step() -> float:
    opt.zero_grad(set_to_none=True)
    images = data['image']
    b = images.shape[0]
    # uint8 [B, 2, H, W, C] -> normalized float [2B, C, H, W] in channels_last memory, views of an image adjacent
    x = ((images.reshape(b * 2, *images.shape[2:]).float() / 255.0 - mean) / std).permute(0, 3, 1, 2)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=dtype == 'bfloat16'):
      z = net(x).float().reshape(b, 2, -1)
    loss = nt_xent(z[:, 0], z[:, 1], temperature, data['weight'])
    loss.backward()
    opt.step()
    return loss.item()

  step.net, step.set_batch = net, set_batch
  return step


def info() -> dict:
  return {'torch': torch.__version__, 'torch_threads': torch.get_num_threads()}


def measure(model: str, task: str, batch_size: int, input_shape, *, steps: int, warmup: int,
            lr: float = 0.01, threads: int | None = None) -> dict:
  """Images/s of the step on its own (``python -m jaxssl.bench`` instead alternates it with jaxssl's)."""
  step = make_step(model, task, batch_size, input_shape, lr=lr, threads=threads)
  step_s = statistics.median(common.step_times(step, steps, warmup + 1))
  return {**info(), 'torch_step_ms_median': round(1e3 * step_s, 2), 'torch_images_per_s': round(batch_size / step_s, 1)}


def _serve(conn, model: str, task: str, batch_size: int, input_shape, dtype: str, options) -> None:
  """The worker process's loop: build the step, then run one per request ('step'), take a new batch
  (('batch', arrays)), until told to stop."""
  try:
    step = make_step(model, task, batch_size, input_shape, dtype=dtype, options=options)
    conn.send(info())
    while True:
      request = conn.recv()
      if request == 'step':
        conn.send(step())
      elif isinstance(request, tuple) and request[0] == 'batch':
        step.set_batch(request[1])
        conn.send(True)
      else:
        break
  finally:
    conn.close()


class StepProcess:
  """The PyTorch step in a process of its own, run one step per call: in one process with JAX, each framework's
  allocations and threads slowed the other's steps (PyTorch's by up to 1.5x on a 2-core VM)."""

  def __init__(self, model: str, task: str, batch_size: int, input_shape, dtype: str = 'float32',
               options: dict | None = None):
    import multiprocessing  # pylint: disable=import-outside-toplevel
    ctx = multiprocessing.get_context('spawn')
    self._conn, child = ctx.Pipe()
    self.task = task
    self._proc = ctx.Process(target=_serve, args=(child, model, task, batch_size, tuple(input_shape), dtype,
                                                  options), daemon=True)
    self._proc.start()
    child.close()
    self.info = self._conn.recv()

  def __call__(self) -> float:
    self._conn.send('step')
    return self._conn.recv()

  def set_batch(self, batch: dict) -> None:
    """The task's batch from jaxssl's pipeline, for the twins that take it (simclr)."""
    if self.task == 'simclr':
      self._conn.send(('batch', {k: np.asarray(v) for k, v in batch.items()}))
      self._conn.recv()

  def close(self) -> None:
    if self._proc.is_alive():
      self._conn.send('stop')
      self._proc.join(timeout=30)
    self._conn.close()
