"""Jigsaw permutation sets chosen greedily for a large minimum pairwise Hamming distance.

Noroozi & Favaro (ECCV 2016, Algorithm 1) add, one at a time, the permutation farthest from the chosen ones on
average; here the farthest by minimum distance, which keeps their average (about 8 of 9 positions differ for
3x3) and guarantees a large minimum (6 for 100 permutations of 9 tiles, 5 for 1000).

The set is a fixed part of the task (its row index is the label), so it is generated deterministically from a
seed and saved with the run (``permutations.npy``); :func:`load_permutations` reads it back.

The greedy selection keeps, for every candidate permutation, its minimum Hamming distance to the permutations
chosen so far; each step takes the candidate whose minimum is largest and updates the vector with one
vectorized pass over all candidates, so a step costs O(#candidates) (all 9! = 362880 for a 3x3 grid): about
0.5 s for 100 permutations and 2 s for 1000 on one CPU core (enumeration included); a selection that runs longer
than 10 s says how far it is every 10 s. Candidates are visited in a seeded random order, which decides the first
permutation and breaks ties, so different seeds give different sets of the same quality.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from typing import Callable

import numpy as np

from jaxssl.runlog import duration, log

# Above this many tiles (4x4 and larger) enumerating all T! permutations is out of the question; a seeded
# random pool of candidates is searched instead.
MAX_ENUMERATED_TILES = 9
DEFAULT_POOL_SIZE = 200_000
# A selection running longer than this many seconds prints how far it is, again after as many more.
PROGRESS_EVERY_S = 10.0


def all_permutations(num_tiles: int) -> np.ndarray:
  """All ``num_tiles!`` permutations of range(num_tiles) in lexicographic order, int8 [T!, T]."""
  if num_tiles > MAX_ENUMERATED_TILES:
    raise ValueError(f'{num_tiles}! permutations are too many to enumerate (at most {MAX_ENUMERATED_TILES} tiles)')
  return np.fromiter(itertools.chain.from_iterable(itertools.permutations(range(num_tiles))), np.int8,
                     count=math.factorial(num_tiles) * num_tiles).reshape(-1, num_tiles)


def _candidates(num_tiles: int, rng: np.random.Generator, pool_size: int) -> np.ndarray:
  """Every permutation (T <= 9) or a pool of distinct random ones, in a seeded random order."""
  if num_tiles <= MAX_ENUMERATED_TILES:
    return rng.permutation(all_permutations(num_tiles), axis=0)
  pool = np.argsort(rng.random((pool_size, num_tiles)), axis=1).astype(np.int8)
  _, first = np.unique(pool, axis=0, return_index=True)
  return pool[np.sort(first)]


def _distance_fn(candidates: np.ndarray):
  """row index -> Hamming distances [N] from that candidate to every candidate.

  Up to 16 tiles each permutation is packed into one uint64, 4 bits a position: the distance is then the number
  of non-zero nibbles of an XOR, a few word operations per candidate (7x faster than comparing int8 rows).
  """
  t = candidates.shape[1]
  if t > 16 or not hasattr(np, 'bitwise_count'):   # numpy < 2.0 has no popcount
    return lambda j: np.count_nonzero(candidates != candidates[j], axis=1)
  shifts = np.uint64(4) * np.arange(t, dtype=np.uint64)
  packed = np.bitwise_or.reduce(candidates.astype(np.uint64) << shifts, axis=1)
  low_bits = np.bitwise_or.reduce(np.uint64(1) << shifts)
  one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)

  def distances(j):
    x = packed ^ packed[j]
    return np.bitwise_count((x | (x >> one) | (x >> two) | (x >> three)) & low_bits)
  return distances


def greedy_max_min_hamming(candidates: np.ndarray, num: int,
                           progress: Callable[[int, int, int], None] | None = None) -> tuple[np.ndarray, int]:
  """Indices of ``num`` rows of ``candidates`` chosen greedily to maximize the minimum pairwise Hamming
  distance, starting from row 0 (ties go to the earliest row), and that minimum distance.

  The returned minimum is what the greedy run measured while selecting: the smallest running-minimum value
  among the rows it took after the first (``len(row)`` when ``num == 1``). ``progress(chosen, num, minimum)`` is
  called after every 256th row taken.
  """
  n, t = candidates.shape
  if not 1 <= num <= n:
    raise ValueError(f'cannot choose {num} of {n} candidate permutations')
  distances = _distance_fn(candidates)
  chosen = np.empty(num, np.int64)
  chosen[0] = 0
  min_dist = distances(0).astype(np.uint8)   # [N]: distance from every candidate to the chosen set
  claimed = t
  for i in range(1, num):
    j = int(np.argmax(min_dist))
    claimed = min(claimed, int(min_dist[j]))
    chosen[i] = j
    np.minimum(min_dist, distances(j), out=min_dist, casting='unsafe')
    if progress is not None and (i + 1) % 256 == 0:
      progress(i + 1, num, claimed)
  return chosen, claimed


class _SelectionProgress:
  """A line on stdout (process 0's) every :data:`PROGRESS_EVERY_S` seconds of a long selection (tens of thousands of
  permutations take minutes): how many are chosen, their minimum distance so far and the time left; a short one
  prints nothing."""

  def __init__(self, num_tiles: int):
    self.num_tiles, self.every = num_tiles, PROGRESS_EVERY_S
    self.start = self.last = time.monotonic()

  def __call__(self, chosen: int, num: int, minimum: int) -> None:
    now = time.monotonic()
    if now - self.last < self.every:
      return
    self.last = now
    left = (now - self.start) * (num - chosen) / chosen
    log(f'jigsaw permutations: {chosen}/{num} chosen of {self.num_tiles} tiles, minimum Hamming distance '
        f'{minimum} so far | ETA {duration(left)}')


def hamming_permutations(num_tiles: int, num_perms: int, seed: int, *, pool_size: int = DEFAULT_POOL_SIZE,
                         return_min_distance: bool = False):
  """``num_perms`` permutations of ``num_tiles`` tiles, pairwise far apart in Hamming distance: int32 [P, T].

  ``num_perms`` must not exceed ``num_tiles!``. With ``return_min_distance`` also returns the minimum
  pairwise Hamming distance of the set as the greedy selection measured it.
  """
  if num_tiles < 2:
    raise ValueError(f'a jigsaw needs at least 2 tiles, got {num_tiles}')
  if num_tiles <= MAX_ENUMERATED_TILES and num_perms > math.factorial(num_tiles):
    raise ValueError(f'{num_perms} permutations requested but {num_tiles} tiles have only '
                     f'{math.factorial(num_tiles)}')
  candidates = _candidates(num_tiles, np.random.default_rng(seed), pool_size)
  idx, min_distance = greedy_max_min_hamming(candidates, num_perms, _SelectionProgress(num_tiles))
  perms = candidates[idx].astype(np.int32)
  return (perms, min_distance) if return_min_distance else perms


def pairwise_hamming(perms: np.ndarray) -> np.ndarray:
  """[P, P] Hamming distances between the rows of ``perms``."""
  perms = np.asarray(perms)
  return np.count_nonzero(perms[:, None, :] != perms[None, :, :], axis=-1)


def min_hamming_distance(perms: np.ndarray) -> int:
  d = pairwise_hamming(perms)
  return int(d[~np.eye(len(d), dtype=bool)].min()) if len(d) > 1 else perms.shape[1]


def check_permutations(perms: np.ndarray, num_tiles: int | None = None, what: str = 'permutation set') -> np.ndarray:
  """Validates a permutation set ([P, T], every row a permutation of range(T), rows distinct)."""
  perms = np.asarray(perms)
  if perms.ndim != 2 or perms.shape[0] < 1 or not np.issubdtype(perms.dtype, np.integer):
    raise ValueError(f'{what}: expected an integer array [P, T], got {perms.dtype} {perms.shape}')
  if num_tiles is not None and perms.shape[1] != num_tiles:
    raise ValueError(f'{what}: rows permute {perms.shape[1]} tiles, but the grid has {num_tiles}')
  if not (np.sort(perms, axis=1) == np.arange(perms.shape[1])).all():
    raise ValueError(f'{what}: not every row is a permutation of 0..{perms.shape[1] - 1}')
  if len(np.unique(perms, axis=0)) != len(perms):
    raise ValueError(f'{what}: some permutations occur twice')
  return perms.astype(np.int32)


def save_permutations(path: str, perms: np.ndarray) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.save(path, check_permutations(perms))


def load_permutations(path: str, num_tiles: int | None = None) -> np.ndarray:
  """A saved permutation set (``permutations.npy`` of a run), validated: int32 [P, T]."""
  return check_permutations(np.load(path, allow_pickle=False), num_tiles, what=path)
