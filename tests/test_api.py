"""The Python API: jaxmed.config by name, path and overlay; jaxmed.fit equals the command line
(same final_params_sha256), in-process and as a subprocess; the notebook objects display."""

import json
import subprocess
import sys

import pytest

import jaxmed

SMALL = {"model.arch": "lenet", "model.weights": None, "data.image_size": 32,
         "frozen.epochs": 1, "finetune.epochs": 1, "train.checkpoint_every_steps": 0}


def small_demo():
  cfg = jaxmed.config("demo")
  for key, value in SMALL.items():
    section, name = key.split(".")
    cfg[section][name] = value
  return cfg


def test_config_by_name_path_and_overlay(tmp_path):
  demo = jaxmed.config("demo")
  assert demo.model.arch == "torchvision/mobilenet_v2" and demo.data.synthetic
  tpu = jaxmed.config("tpu:chest_xray")  # the hardware overlay on another dataset config
  assert tpu.model.dtype == "bfloat16" and tpu.data.root == jaxmed.config("chest_xray").data.root
  mine = tmp_path / "mine.py"  # a user's file that builds on a shipped config
  mine.write_text("from jaxmed.configs import demo\n\ndef get_config():\n"
                  "  c = demo.get_config()\n  c.data.image_size = 48\n  return c\n")
  assert jaxmed.config(str(mine)).data.image_size == 48
  with pytest.raises(ValueError, match="did you mean 'demo'"):
    jaxmed.config("dmeo")


def test_fit_equals_the_command_line(tmp_path):
  run = jaxmed.fit(small_demo(), workdir=tmp_path / "api")
  overrides = [f"--config.{k}={v}" for k, v in SMALL.items()]
  cli = subprocess.run([sys.executable, "-m", "jaxmed.train", "--config", "demo",
                        "--workdir", str(tmp_path / "cli"), *overrides],
                       capture_output=True, text=True, cwd=tmp_path, timeout=900)
  assert cli.returncode == 0, cli.stderr[-3000:]
  from_cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
  assert run.final_params_sha256 == from_cli["final_params_sha256"]
  assert (run.workdir / "report" / "index.html").exists()
  assert [r["epoch"] for r in run.history] == [1, 1, 2, 2]
  html = run._repr_html_()
  assert "accuracy" in html and "data:image/png;base64," in html
  again = jaxmed.load_run(run.workdir)
  assert again.summary == run.summary and set(again.paths) >= {"summary", "curves", "report_html"}
  rerun = jaxmed.fit(small_demo(), workdir=run.workdir)  # a notebook run top to bottom again
  assert rerun.summary == run.summary
  changed = small_demo()
  changed.frozen.learning_rate = 0.5
  from jaxmed.runtime.cli import UserError
  with pytest.raises(UserError, match="frozen.learning_rate"):
    jaxmed.fit(changed, workdir=run.workdir)

  evaluated = jaxmed.evaluate(run.workdir)
  assert evaluated["accuracy"] == pytest.approx(run.summary["test"]["accuracy"])
  assert "macro avg" in evaluated._repr_html_()
  images = sorted((jaxmed.demo_data() / "test").rglob("*.png"))[:3]
  predictions = jaxmed.predict(images, workdir=run.workdir)
  assert [p["status"] for p in predictions] == ["ok"] * 3
  assert "predicted" in predictions._repr_html_()


def test_fit_in_a_subprocess_gives_the_same_parameters(tmp_path):
  inside = jaxmed.fit(small_demo(), workdir=tmp_path / "inside")
  child = jaxmed.fit(small_demo(), workdir=tmp_path / "child", subprocess=True)
  assert child.final_params_sha256 == inside.final_params_sha256
  assert not list(tmp_path.glob(".*.config.py"))  # the generated config file is removed


def test_command_modules_stay_callable_api_functions():
  import jaxmed.evaluate  # binds the command module to the name jaxmed.evaluate ...
  import jaxmed.predict
  assert callable(jaxmed.evaluate) and callable(jaxmed.predict)  # ... which still calls the API
  with pytest.raises(FileNotFoundError, match="config.json"):
    jaxmed.evaluate("/nonexistent-workdir")
