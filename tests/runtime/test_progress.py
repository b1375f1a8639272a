import io

from jaxmed.runtime.progress import Progress, format_seconds


def test_progress_reports_rate_and_eta_from_steps(monkeypatch):
  clock = iter([100.0, 102.0])
  monkeypatch.setattr("jaxmed.runtime.progress.time.perf_counter", lambda: next(clock))
  out = io.StringIO()
  p = Progress(total_steps=10, batch_size=8, stream=out, log_every_s=0.0)
  p.update("epoch 1/2 (frozen)", 1, 0.5)
  p.update("epoch 1/2 (frozen)", 5, 0.25)  # 4 steps x 8 images in 2 s = 16 img/s; 5 left = 2.5 s
  last = out.getvalue().splitlines()[-1]
  assert "step 5/10" in last and "16.0 img/s" in last and "ETA 2s" in last and "0.2500" in last


def test_format_seconds():
  assert format_seconds(59) == "59s" and format_seconds(61) == "1m01s"
  assert format_seconds(3725) == "1h02m05s"


class FakeHandle:
  """Stands in for IPython's DisplayHandle: records what was shown and every in-place update."""

  def __init__(self, shown, obj):
    self.objs = [obj]
    shown.append(self)

  def update(self, obj):
    self.objs.append(obj)


def notebook_progress(monkeypatch, clock_values, **kwargs):
  clock = iter(clock_values)
  monkeypatch.setattr("jaxmed.runtime.progress.time.perf_counter", lambda: next(clock))
  monkeypatch.setattr("jaxmed.runtime.progress.in_notebook", lambda: True)
  shown = []
  monkeypatch.setattr("jaxmed.runtime.progress.open_display", lambda obj: FakeHandle(shown, obj))
  return Progress(total_steps=10, batch_size=8, **kwargs), shown


def test_notebook_updates_one_display_in_place_without_ansi(monkeypatch, capsys):
  p, shown = notebook_progress(monkeypatch, [100.0, 101.0, 102.0])
  assert p.notebook and not p.tty
  p.update("epoch 1/2 (frozen)", 1, 0.5)
  p.update("epoch 1/2 (frozen)", 3, 0.4)
  p.update("epoch 1/2 (frozen)", 5, 0.25)  # 4 steps x 8 images in 2 s = 16 img/s; 5 left = 2.5 s
  assert len(shown) == 1 and len(shown[0].objs) == 3
  last = shown[0].objs[-1]
  text, page = repr(last), last._repr_html_()
  assert "step 5/10" in text and "16.0 img/s" in text and "ETA 2s" in text and "0.2500" in text
  assert "epoch 1/2 (frozen)" in page and 'value="5" max="10"' in page
  out = capsys.readouterr()
  assert out.out == "" and out.err == ""  # nothing on the streams, so no ANSI codes either
  assert not any("\033" in repr(o) or "\r" in repr(o) or "\033" in o._repr_html_()
                 for o in shown[0].objs)


def test_notebook_throttles_updates_and_newline_shows_the_last_line(monkeypatch):
  p, shown = notebook_progress(monkeypatch, [100.0, 100.01, 100.02, 101.0])
  p.update("e", 1, 1.0)   # opens the display
  p.update("e", 2, 1.0)   # 10 ms later: kept for later, not sent
  p.update("e", 3, 1.0)
  assert len(shown[0].objs) == 1
  p.newline()             # the epoch's display ends on its last step
  assert "step 3/10" in repr(shown[0].objs[-1])
  p.update("e", 4, 1.0)   # the next epoch: a new line below what was printed meanwhile
  assert len(shown) == 2 and "step 4/10" in repr(shown[1].objs[0])


def test_explicit_stream_is_written_even_in_a_notebook(monkeypatch):
  # Non-primary processes pass a Discard, tests a StringIO: those stay streams.
  p, shown = notebook_progress(monkeypatch, [100.0, 102.0], stream=io.StringIO(), log_every_s=0.0)
  p.update("e", 1, 0.5)
  p.update("e", 5, 0.25)
  assert not p.notebook and shown == [] and "step 5/10" in p.stream.getvalue()


def test_in_notebook_detects_an_ipykernel_shell(monkeypatch):
  import sys
  import types
  from jaxmed.runtime import progress

  class ZMQInteractiveShell:
    pass

  class ColabShell(ZMQInteractiveShell):  # Colab's and Kaggle's shells subclass ipykernel's
    pass

  class TerminalInteractiveShell:
    pass

  fake = types.ModuleType("IPython")
  monkeypatch.setitem(sys.modules, "IPython", fake)
  monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
  for shell, expected in [(ColabShell(), True), (TerminalInteractiveShell(), False), (None, False)]:
    fake.get_ipython = lambda shell=shell: shell
    assert progress.in_notebook() is expected
  # ipykernel loaded and stdout its OutStream (not a tty): a kernel even without the shell at hand.
  fake.get_ipython = lambda: None
  monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
  monkeypatch.setattr(sys, "stdout", io.StringIO())
  assert progress.in_notebook() is False  # imported, e.g. by a test: stdout is no kernel's
  OutStream = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})
  monkeypatch.setattr(sys, "stdout", OutStream())
  assert progress.in_notebook() is True
