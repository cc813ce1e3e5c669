"""The input pipeline's figures for ``python -m jaxssl.bench`` (step.py): its rate with 0, 1, ... N worker
processes, the cost per image of each stage, and what a GPU step would ask of it.

The GPU figure is on paper: the README records jaxssl's ResNet-18 (CIFAR stem) rotation step on one H100 (batch
256, 32x32x1: 18,491 source images/s in bf16, 9,255 in fp32, docs/benchmarks.md "GPU"); that step's model FLOPs
(XLA's cost analysis, as the bench counts them) give the FLOP/s the H100 sustained, and a config's FLOPs per
image turn that into the images/s an H100 step of that config would consume, assuming it sustains the same
FLOP/s. An estimate, not a measurement: a model far smaller than the reference (CifarNet on 28 px: millions of
images/s on paper) keeps a GPU less busy, so its figure is an upper bound. Divided by what one worker process
makes here, it is the number of such cores the input would need.
"""

from __future__ import annotations

import time

import numpy as np

# Measured 2026-11-26 on one NVIDIA H100 (README "Speed", docs/benchmarks.md "GPU"): source images/s of jaxssl's
# ResNet-18 (CIFAR stem) rotation step, batch 256 (1,024 images of 32x32x1 through the network).
H100_REFERENCE = {'bfloat16': 18_491.0, 'float32': 9_255.0}
H100_REFERENCE_BATCH = 256
# That step's model FLOPs: XLA's cost analysis of the step of jaxssl/bench/gpu.py's config (fmnist_rotation with
# resnet18_cifar, pad_to 32, batch 256, the online probe off), counted as step.py's ``_model_flops`` counts a
# config's (plain convolutions), 2026-11-30: 2,964.9 GFLOP (so the H100 sustained 215 TFLOP/s in bf16).
H100_REFERENCE_GFLOPS_PER_STEP = 2964.9


def rate(make_iterator, *, num_workers: int, batches: int, images_per_batch: int) -> float:
  """Images/s of an iterator made by ``make_iterator(num_workers)``, in steady state: the first batch (opening
  files, starting workers) and as many as the buffers hold are drawn untimed, then ``batches`` are timed."""
  it = make_iterator(num_workers)
  try:
    next(it)
    for _ in range(2 * num_workers + 2):   # what the workers' buffers filled while they started
      next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
      next(it)
    return batches * images_per_batch / (time.perf_counter() - t0)
  finally:  # grain's workers and their shared memory end here, not at exit
    getattr(it, 'close', lambda: None)()


def worker_counts(cores: int) -> list[int]:
  """0 (the training process), then 1, 2, 4, ... up to ``cores`` worker processes, and ``cores`` itself."""
  counts, k = [0], 1
  while k < cores:
    counts.append(k)
    k *= 2
  return counts + [max(1, cores)]


def scaling(make_iterator, counts, *, batches: int, images_per_batch: int) -> dict[str, float]:
  """{worker count: images/s} (keys are strings, for the JSON line)."""
  return {str(k): round(rate(make_iterator, num_workers=k, batches=batches, images_per_batch=images_per_batch), 1)
          for k in counts}


def stage_costs(source, tasks, *, global_batch: int, seed: int, mesh, batches: int) -> dict[str, float]:
  """Microseconds per source image of each stage, timed apart on the same ``batches`` training batches, one
  thread: read + decode (the source's ``__getitems__``: ArrayRecord read, feature parsing, image decoding),
  stack (records -> one batch of arrays), transform (the tasks' batch transforms: crops, flips, the pretext's
  work), to_device (the host-to-device copy of the tasks' batches)."""
  import jax  # pylint: disable=import-outside-toplevel
  from jaxssl import sharding  # pylint: disable=import-outside-toplevel
  from jaxssl.data import pipeline  # pylint: disable=import-outside-toplevel
  from jaxssl.data.sources import read_records  # pylint: disable=import-outside-toplevel
  rows = sharding.batch_layout(mesh, global_batch, 'batch_size').rows()
  index_batches = pipeline.train_index_batches(len(source), global_batch=global_batch, seed=seed)
  transforms = pipeline.TaskTransforms(tuple(tasks), train=True)
  spent = dict.fromkeys(('read_decode', 'stack', 'transform', 'to_device'), 0.0)
  for i in range(batches + 1):        # the first batch opens the files: untimed
    indices = index_batches[i][rows]
    t0 = time.perf_counter()
    records = read_records(source, indices)
    t1 = time.perf_counter()
    batch = pipeline.stack_records(records)
    t2 = time.perf_counter()
    out = transforms.on_rows(batch, np.random.default_rng(i), rows, global_batch)
    t3 = time.perf_counter()
    jax.block_until_ready(sharding.shard_batch(out, mesh))
    t4 = time.perf_counter()
    if i:
      for key, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
        spent[key] += seconds
  images = batches * len(rows)
  return {k: round(1e6 * v / images, 1) for k, v in spent.items()}


def gpu_on_paper(gflops_per_step: float, batch_size: int, images_per_s_per_worker: float) -> dict:
  """What an H100 step of this config would consume (images/s, from the recorded ResNet-18 step's FLOP/s) and how
  many of this machine's cores, one worker process each at ``images_per_s_per_worker``, that input would take."""
  if gflops_per_step <= 0 or batch_size <= 0:
    return {}
  per_image = gflops_per_step / batch_size
  out = {}
  for dtype, ref_rate in H100_REFERENCE.items():
    sustained = H100_REFERENCE_GFLOPS_PER_STEP / H100_REFERENCE_BATCH * ref_rate   # GFLOP/s
    images = sustained / per_image
    out[dtype] = {'h100_step_images_per_s': round(images, 0),
                  'cores_needed': round(images / images_per_s_per_worker, 1) if images_per_s_per_worker else None}
  out['how'] = ("FLOP-scaled from the README's H100 ResNet-18 rotation step (same sustained FLOP/s assumed: an upper "
                "bound for models far smaller than it); cores_needed = that rate / one worker's images/s here")
  return out
