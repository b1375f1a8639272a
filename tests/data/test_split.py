import numpy as np
import pytest

from jaxmed.data.split import stratified_split


def test_stratified_split_matches_hand_computation():
  # 10 of class 0, 5 of class 1, 2 of class 2; fraction 0.2 -> round(2.0)=2, round(1.0)=1,
  # round(0.4)=0 but raised to 1 so the rare class appears in validation.
  labels = np.array([0] * 10 + [1] * 5 + [2] * 2)
  keep, held = stratified_split(labels, 0.2, seed=3)
  assert np.bincount(labels[held], minlength=3).tolist() == [2, 1, 1]
  assert np.bincount(labels[keep], minlength=3).tolist() == [8, 4, 1]


def test_split_is_disjoint_complete_and_seeded():
  labels = np.random.default_rng(0).integers(0, 4, 500)
  keep, held = stratified_split(labels, 0.15, seed=7)
  assert not set(keep) & set(held)
  assert sorted(np.concatenate([keep, held]).tolist()) == list(range(500))
  again = stratified_split(labels, 0.15, seed=7)
  other = stratified_split(labels, 0.15, seed=8)
  assert np.array_equal(held, again[1])
  assert not np.array_equal(held, other[1])
  # per-class fractions stay within one example of the target
  for c in range(4):
    n = (labels == c).sum()
    assert abs((labels[held] == c).sum() - round(n * 0.15)) <= 1


def test_single_example_class_stays_in_train_and_bad_fraction_rejected():
  keep, held = stratified_split(np.array([0, 0, 0, 1]), 0.5, seed=0)
  assert 3 in keep and 3 not in held
  with pytest.raises(ValueError):
    stratified_split(np.array([0, 1]), 1.0, seed=0)
