"""Decoded images kept between runs (jaxmed/data/decoded_cache.py): a hit returns exactly what
decoding returned, without decoding; a changed file, a damaged entry or a manifest run decodes;
evaluating a folder again reads it back, labelled for the run at hand."""

import json
import types

import numpy as np
import pytest
from PIL import Image

from jaxmed.data import decoded_cache, folder
from jaxmed.data.load import load_split
from conftest import write_label_tree


@pytest.fixture
def tree(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXMED_CACHE", str(tmp_path / "cache"))
  rng = np.random.default_rng(0)
  paths = []
  for i in range(6):
    path = tmp_path / "data" / f"{i}.png"
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (20 + i, 24, 3), dtype=np.uint8)).save(path)
    paths.append(path)
  (tmp_path / "data" / "bad.png").write_bytes(b"not an image")
  paths.insert(3, tmp_path / "data" / "bad.png")
  return folder.FileList(paths, [i % 2 for i in range(len(paths))])


def _no_decoding(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("decoded although cached")
  monkeypatch.setattr(folder, "_decode", refuse)


def test_a_second_decode_is_read_back_exactly_without_decoding(tree, monkeypatch):
  first, errors = folder.decode_files(tree, 16, cache=True)
  assert len(first) == 6 and len(errors) == 1 and "bad.png" in errors[0]
  _no_decoding(monkeypatch)
  again, errors_again = folder.decode_files(tree, 16, cache=True)
  np.testing.assert_array_equal(again.images, first.images)
  np.testing.assert_array_equal(again.labels, first.labels)
  assert again.paths == first.paths and errors_again == errors
  with pytest.raises(AssertionError, match="decoded although cached"):
    folder.decode_files(tree, 24, cache=True)  # another size is another entry


def test_a_changed_file_is_decoded_again(tree):
  first, _ = folder.decode_files(tree, 16, cache=True)
  Image.fromarray(np.full((30, 30, 3), 200, np.uint8)).save(tree.paths[0])
  again, _ = folder.decode_files(tree, 16, cache=True)
  assert (again.images[0] == 200).all() and not (first.images[0] == 200).all()
  np.testing.assert_array_equal(again.images[1:], first.images[1:])


def test_a_damaged_entry_is_a_miss_and_manifest_runs_always_read(tree, monkeypatch):
  first, _ = folder.decode_files(tree, 16, cache=True)
  entry = decoded_cache._root() / decoded_cache.key(tree, 16)
  (entry / "images.npy").write_bytes(b"damaged")
  again, _ = folder.decode_files(tree, 16, cache=True)  # decodes, stores afresh
  np.testing.assert_array_equal(again.images, first.images)
  assert json.loads((entry / "meta.json").read_text())["size"] == 16
  _no_decoding(monkeypatch)
  with pytest.raises(AssertionError, match="decoded although cached"):
    folder.decode_files(tree, 16, with_hash=True, cache=True)


def test_eviction_keeps_the_most_recently_used(tree):
  for size in (8, 12, 16):
    folder.decode_files(tree, size, cache=True)
  folder.decode_files(tree, 8, cache=True)  # used again: the most recent
  root = decoded_cache._root()
  sizes = {e.name: sum(f.stat().st_size for f in e.iterdir()) for e in root.iterdir()}
  decoded_cache.evict(root, max_bytes=sum(sizes.values()) - 1)  # one must go: the 12 px one
  left = {e.name for e in root.iterdir()}
  assert decoded_cache.key(tree, 12) not in left
  assert {decoded_cache.key(tree, 8), decoded_cache.key(tree, 16)} <= left


def test_evaluating_a_folder_twice_decodes_it_once_with_the_run_classes(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXMED_CACHE", str(tmp_path / "cache"))
  write_label_tree(tmp_path / "ext", {"test": {"a": 2, "b": 3}})
  run = types.SimpleNamespace(classes=["a", "b"], image_size=16)
  first = load_split(run, str(tmp_path / "ext"), "test")
  _no_decoding(monkeypatch)
  again = load_split(run, str(tmp_path / "ext"), "test")
  np.testing.assert_array_equal(again.images, first.images)
  np.testing.assert_array_equal(again.labels, first.labels)
  other = types.SimpleNamespace(classes=["b", "c", "a"], image_size=16)  # labels from the run
  relabelled = load_split(other, str(tmp_path / "ext"), "test")
  assert relabelled.labels.tolist() == [{0: 2, 1: 0}[int(x)] for x in first.labels]
  with pytest.raises(AssertionError, match="decoded although cached"):
    load_split(run, str(tmp_path / "ext"), "test", decoded_cache=False)
