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
  def __init__(self, total_steps: int, batch_size: int, stream=None, log_every_s: float = 10.0):
    self.total, self.batch_size = total_steps, batch_size
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.log_every_s = log_every_s
    self.done = 0
    self.start = self.last_print = None
    self.timed_steps = 0   # steps after the first, which includes compilation
    self.timed_since = None

  def update(self, label: str, loss: float, force: bool = False):
    now = time.perf_counter()
    if self.start is None:
      self.start = self.last_print = now
    self.done += 1
    if self.timed_since is None:
      self.timed_since = now   # first step done: compile time excluded from the rate
    else:
      self.timed_steps += 1
    rate = self.timed_steps * self.batch_size / max(now - self.timed_since, 1e-9)
    eta = (self.total - self.done) * self.batch_size / rate if rate else float("nan")
    if not (force or self.tty or now - self.last_print >= self.log_every_s):
      return
    self.last_print = now
    eta_s = format_seconds(eta) if eta == eta else "?"
    line = (f"{label} step {self.done}/{self.total} loss {loss:.4f} "
            f"{rate:6.1f} img/s ETA {eta_s}")
    self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
    self.stream.flush()

  def newline(self):
    if self.tty:
      self.stream.write("\n")
      self.stream.flush()

  @property
  def images_per_second(self) -> float:
    if not self.timed_steps:
      return float("nan")
    return self.timed_steps * self.batch_size / (time.perf_counter() - self.timed_since)
