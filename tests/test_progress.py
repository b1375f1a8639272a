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
