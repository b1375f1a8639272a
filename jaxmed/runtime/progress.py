"""One-line training progress: epoch, step, loss, images/s and ETA.

Three ways to show it, picked when a `Progress` is made:
- a terminal: the line redraws in place with `\\r` and an ANSI erase;
- a log (CI, nohup, a child process whose output is piped): a fresh line at most every
  `log_every_s` seconds, so logs stay readable;
- a Jupyter kernel (Colab, Kaggle, JupyterLab) when no stream was passed: one rich display output
  updated in place. A kernel's stderr is not a tty, so the log mode would print a line every 10 s
  into the cell, and ANSI codes show up as garbage in some frontends.
`newline()` ends the line in all three: the next update starts a new line (a new display) below
what was printed meanwhile, as on a terminal.
"""

import html
import sys
import time


def format_seconds(s: float) -> str:
  s = int(round(s))
  h, rem = divmod(s, 3600)
  m, sec = divmod(rem, 60)
  return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


def in_notebook() -> bool:
  """True inside a Jupyter kernel (ipykernel; Colab's and Kaggle's shells subclass it)."""
  ipython = sys.modules.get("IPython")  # not imported: not in a kernel, and importing it costs
  shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
  if shell is not None and any(k.__name__ == "ZMQInteractiveShell" for k in type(shell).__mro__):
    return True
  # A kernel whose shell is not ipykernel's class: ipykernel is loaded and stdout is its non-tty
  # OutStream. Loading ipykernel alone (a test importing it) does not make a notebook: the output
  # would go to a stream no frontend shows as a display.
  if "ipykernel" in sys.modules and type(sys.stdout).__module__.startswith("ipykernel"):
    return not (hasattr(sys.stdout, "isatty") and sys.stdout.isatty())
  return False


def open_display(obj):
  """Shows `obj` as a new output and returns its handle (`.update(obj)` redraws it in place)."""
  from IPython.display import display
  return display(obj, display_id=True)


class _Line:
  """The progress line as a display object: HTML (a bar and the text) with a text fallback."""

  def __init__(self, text: str, done: int, total: int):
    self.text, self.done, self.total = text, done, total

  def __repr__(self):
    return self.text

  def _repr_html_(self):
    return (f'<div style="font-family:monospace;white-space:pre">'
            f'<progress value="{self.done}" max="{max(self.total, 1)}" '
            f'style="width:10em;vertical-align:middle"></progress> {html.escape(self.text)}</div>')


class Progress:
  """Progress of one training phase of `total_steps` steps of `batch_size` images.

  `notebook`: None detects a Jupyter kernel (used only when `stream` is None, so an explicit
  stream, such as the non-primary processes' Discard, keeps being written to); True or False
  forces it.
  """

  # A display update is a message to the browser: at most this often, the latest line kept for
  # newline() so an epoch's display ends on its last step.
  display_every_s = 0.25

  def __init__(self, total_steps: int, batch_size: int, stream=None, log_every_s: float = 10.0,
               notebook: bool | None = None):
    self.total, self.batch_size = total_steps, batch_size
    self.notebook = (stream is None and in_notebook()) if notebook is None else notebook
    self.stream = stream or sys.stderr
    self.tty = not self.notebook and hasattr(self.stream, "isatty") and self.stream.isatty()
    self.log_every_s = log_every_s
    self.first = None       # (time, steps) at the first update: the rate excludes warm-up
    self.last = (None, 0)   # (time, steps) at the latest update
    self.last_print = 0.0
    self.handle = None      # notebook: the display of the current line
    self.pending = None     # notebook: a line not shown yet because of display_every_s

  def update(self, label: str, done_steps: int, loss: float, force: bool = False):
    now = time.perf_counter()
    if self.first is None:
      self.first = (now, done_steps)
      self.last_print = now
    self.last = (now, done_steps)
    rate = self.images_per_second
    eta = (self.total - done_steps) * self.batch_size / rate if rate == rate and rate > 0 else None
    line = (f"{label} step {done_steps}/{self.total} loss {loss:.4f} "
            f"{rate:6.1f} img/s ETA {format_seconds(eta) if eta is not None else '?'}")
    if self.notebook:
      self.pending = _Line(line, done_steps, self.total)
      if force or self.handle is None or now - self.last_print >= self.display_every_s:
        self._show()
        self.last_print = now
      return
    if not (force or self.tty or now - self.last_print >= self.log_every_s):
      return
    self.last_print = now
    self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
    self.stream.flush()

  def _show(self):
    if self.handle is None:
      self.handle = open_display(self.pending)
    else:
      self.handle.update(self.pending)
    self.pending = None

  def newline(self):
    if self.notebook:
      if self.pending is not None:
        self._show()
      self.handle = None
    elif self.tty:
      self.stream.write("\n")
      self.stream.flush()

  @property
  def images_per_second(self) -> float:
    if self.first is None or self.last[1] <= self.first[1]:
      return float("nan")
    return (self.last[1] - self.first[1]) * self.batch_size / (self.last[0] - self.first[0])
