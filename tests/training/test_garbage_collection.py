"""The collector kept out of the training steps (jaxmed/training/garbage_collection.py): each
epoch's steps run with what survived its start frozen, and the run gives everything back to the
collector when it ends, failed or not."""

import gc

import pytest

from jaxmed.training import garbage_collection, loop as train
from conftest import small_config, write_label_tree


@pytest.fixture
def config(tmp_path):
  root = write_label_tree(tmp_path / "data", {"train": {"a": 20, "b": 20}, "test": {"a": 4, "b": 4}})
  c = small_config(root, "lenet")
  c.model.weights = None
  c.frozen.epochs, c.finetune.epochs = 0, 3
  return c


def _watch_settle(monkeypatch, fail_at=None):
  frozen_counts, real = [], garbage_collection.settle

  def settle():
    if len(frozen_counts) == fail_at:
      raise RuntimeError("stopped inside the run")
    seconds = real()
    frozen_counts.append(gc.get_freeze_count())
    return seconds

  monkeypatch.setattr(garbage_collection, "settle", settle)
  return frozen_counts


def test_each_epoch_starts_frozen_and_the_run_thaws(config, tmp_path, monkeypatch):
  before = gc.get_freeze_count()  # not 0 on Python 3.12, which freezes a few hundred itself
  frozen_counts = _watch_settle(monkeypatch)
  summary = train.train_and_evaluate(config, tmp_path / "run")
  assert len(frozen_counts) == 3 and all(n > before + 1000 for n in frozen_counts)  # per epoch
  assert summary["timings"]["gc_s"] > 0
  assert gc.get_freeze_count() <= before  # thawed: the run's objects are collectable again


def test_a_failed_run_thaws_too(config, tmp_path, monkeypatch):
  before = gc.get_freeze_count()
  frozen_counts = _watch_settle(monkeypatch, fail_at=1)  # the second epoch's start fails
  with pytest.raises(RuntimeError, match="stopped inside the run"):
    train.train_and_evaluate(config, tmp_path / "run")
  assert len(frozen_counts) == 1 and frozen_counts[0] > before + 1000
  assert gc.get_freeze_count() <= before
