"""One-line training progress: epoch, step, loss, images/s and ETA.

On a terminal the line redraws in place; in a log (CI, nohup, notebooks' captured output) it
prints a fresh line at most every `log_every_s` seconds, so logs stay readable.
"""

import sys
import time


def format_seconds(s: float) -> str:
  s = int(round(s))
  h, rem = divmod(s, 3600)
  m, sec = divmod(rem, 60)
  return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


class Progress:
  """Progress of one training phase of `total_steps` steps of `batch_size` images."""

  def __init__(self, total_steps: int, batch_size: int, stream=None, log_every_s: float = 10.0):
    self.total, self.batch_size = total_steps, batch_size
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.log_every_s = log_every_s
    self.first = None       # (time, steps) at the first update: the rate excludes warm-up
    self.last = (None, 0)   # (time, steps) at the latest update
    self.last_print = 0.0

  def update(self, label: str, done_steps: int, loss: float, force: bool = False):
    now = time.perf_counter()
    if self.first is None:
      self.first = (now, done_steps)
      self.last_print = now
    self.last = (now, done_steps)
    rate = self.images_per_second
    eta = (self.total - done_steps) * self.batch_size / rate if rate == rate and rate > 0 else None
    if not (force or self.tty or now - self.last_print >= self.log_every_s):
      return
    self.last_print = now
    line = (f"{label} step {done_steps}/{self.total} loss {loss:.4f} "
            f"{rate:6.1f} img/s ETA {format_seconds(eta) if eta is not None else '?'}")
    self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
    self.stream.flush()

  def newline(self):
    if self.tty:
      self.stream.write("\n")
      self.stream.flush()

  @property
  def images_per_second(self) -> float:
    if self.first is None or self.last[1] <= self.first[1]:
      return float("nan")
    return (self.last[1] - self.first[1]) * self.batch_size / (self.last[0] - self.first[0])
