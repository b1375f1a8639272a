"""SIGTERM (preemption) and Ctrl-C become a flag the train loop checks between steps, so it can
save a checkpoint and exit cleanly instead of dying mid-write."""

import contextlib
import signal
import threading


class StopRequest:
  def __init__(self):
    self.signal: int | None = None

  def __bool__(self):
    return self.signal is not None


@contextlib.contextmanager
def catch_stop_signals():
  """Yields a StopRequest set by SIGTERM/SIGINT; a second Ctrl-C interrupts at once."""
  request = StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield request  # signals can only be handled on the main thread
    return

  def handler(signum, frame):
    if request and signum == signal.SIGINT:
      raise KeyboardInterrupt
    request.signal = signum
    print(f"\nreceived {signal.Signals(signum).name}: saving a checkpoint after this step "
          f"(Ctrl-C again to stop at once)", flush=True)

  previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield request
  finally:
    for s, h in previous.items():
      signal.signal(s, h)
