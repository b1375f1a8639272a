"""Python's garbage collector kept out of the training steps.

A full (generation 2) collection walks every object the process holds: after the imports, the
Flax modules, the programs and the data, 0.25-0.3 s in the demo (measured 2026-12-03, Python
3.12.1, 2-core AMD EPYC). Python starts one whenever enough new objects have survived, so one
lands in the middle of an epoch, where the loop stops dispatching and the device runs dry; the
younger generations' collections add ~1 ms per step more. So the loop collects at each epoch's
start (the run's first: before its first step) and freezes what survives (`gc.freeze`: a
generation no collection walks), so that the collections during the steps walk only what the
epoch itself creates (the first settle costs ~0.1 s, later ones ~2 ms). `thaw()` at the end of
the run gives the frozen objects back to the collector: a notebook that trains again must not
keep the last run's cycles forever.
"""

import gc
import time


def settle() -> float:
  """Collects, then freezes the survivors; returns the seconds it took."""
  start = time.perf_counter()
  gc.collect()
  gc.freeze()
  return time.perf_counter() - start


def thaw() -> None:
  """Frozen objects become collectable again (their cycles are found at the next full
  collection). All of them: gc cannot unfreeze only the run's, so also the few hundred that
  Python 3.12 itself keeps frozen, which stay alive as they were."""
  gc.unfreeze()
