"""``python tests/held_run.py HOLD_DIR ARGS...``: ``python -m jaxssl.main ARGS...``, held still right after its
first checkpoint save until a signal (SIGTERM, SIGINT) arrives or HOLD_DIR/release appears; it writes
HOLD_DIR/held-<process index> (holding the step) once it holds.

Why. The preemption tests must signal a run that is certainly mid-training. Polling a free-running process for
its checkpoints and signalling it races with the run: on a loaded machine the signal can land after the last
step, and the run exits 0. Held, the run cannot move on before the test has signalled it; then it goes on as
jaxssl runs do (the signal handler is the trainer's own), only later. The first save of a process is always a
checkpoint newer than those its workdir had: a resumed run saves only after new steps.
"""

import os
import pathlib
import signal
import sys
import time

HOLD_LIMIT_S = 600  # a test that never signals fails on its own timeout; the run then goes on


def _hold(hold_dir: pathlib.Path, step: int) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  got = []
  previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

  def note(signum, frame):
    got.append(signum)
    handler = previous[signum]
    if callable(handler):
      handler(signum, frame)  # the trainer's own: it stops the run at its next step

  for s in previous:
    signal.signal(s, note)
  try:
    marker = hold_dir / f'held-{jax.process_index()}'
    tmp = marker.with_name(marker.name + '.tmp')
    tmp.write_text(str(step), encoding='utf-8')
    os.replace(tmp, marker)  # whole or absent
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not got and not (hold_dir / 'release').exists() and time.monotonic() < deadline:
      time.sleep(0.01)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def main() -> None:
  hold_dir = pathlib.Path(sys.argv[1])
  sys.argv = ['jaxssl.main', *sys.argv[2:]]
  from jaxssl import main as jaxssl_main  # pylint: disable=import-outside-toplevel
  from jaxssl.train import checkpoint  # pylint: disable=import-outside-toplevel
  save, held = checkpoint.Checkpointer.save, []

  def save_then_hold(self, step, *args, **kwargs):
    save(self, step, *args, **kwargs)
    if not held:
      held.append(step)
      _hold(hold_dir, step)

  checkpoint.Checkpointer.save = save_then_hold
  jaxssl_main.run()


if __name__ == '__main__':
  main()
