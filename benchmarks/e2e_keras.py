"""The Keras side of benchmarks/end_to_end.py, run by it as a subprocess (KERAS_BACKEND=tensorflow):
MobileNet alpha 0.25 + GAP + Dense(2) trained on WORKDIR/data/{train,val} fed by
ImageDataGenerator.flow_from_directory (keras-flow) or a tuned tf.data pipeline (keras-tfdata).
Reports its files, each fit() start and each epoch as one-line JSON events prefixed by EVENT.

  python benchmarks/e2e_keras.py keras-flow --tree DIR --weights H5 [--size 128] [--batch 32]
      [--seed 0] [--frozen-epochs 2] [--finetune-epochs 3]
"""

import argparse
import json
import math
import time
from pathlib import Path

from e2e_split import IMAGE_EXTENSIONS, files_digest

EVENT = "@@E2E "  # prefix of the event lines

# The augmentation, in ImageDataGenerator's option names and units (shear in degrees); jaxmed's
# run in end_to_end.py uses the same dict.
AUGMENT = dict(rotation_range=10.0, width_shift_range=0.1, height_shift_range=0.1,
               shear_range=0.1, zoom_range=0.1, horizontal_flip=True, fill_mode="nearest")


def run(args):
  """Trains as a Keras user would, printing EVENT lines for the parent to time."""
  import tensorflow as tf
  import keras
  from keras.applications import mobilenet

  def emit(event, **fields):
    print(EVENT + json.dumps({"event": event, **fields}), flush=True)

  keras.utils.set_random_seed(args.seed)
  size, batch, tree = args.size, args.batch, Path(args.tree)
  t_ready = time.perf_counter()

  if args.child == "keras-flow":
    ImageDataGenerator = tf.keras.preprocessing.image.ImageDataGenerator
    train_gen = ImageDataGenerator(preprocessing_function=mobilenet.preprocess_input, **AUGMENT)
    val_gen = ImageDataGenerator(preprocessing_function=mobilenet.preprocess_input)
    train = train_gen.flow_from_directory(str(tree / "train"), target_size=(size, size),
                                          batch_size=batch, class_mode="sparse", seed=args.seed)
    val = val_gen.flow_from_directory(str(tree / "val"), target_size=(size, size),
                                      batch_size=batch, class_mode="sparse", shuffle=False)
    seen = {}
    for name, it in (("train", train), ("val", val)):
      names = {i: c for c, i in it.class_indices.items()}
      rel = [f"{names[int(l)]}/{Path(p).name}" for p, l in zip(it.filepaths, it.classes)]
      seen[name] = {"count": len(rel), "sha256": files_digest(rel),
                    "classes": [names[i] for i in sorted(names)]}
    steps = {"train": len(train), "val": len(val)}
  else:
    AUTOTUNE = tf.data.AUTOTUNE
    seen, lists = {}, {}
    for name in ("train", "val"):
      classes = sorted(d.name for d in (tree / name).iterdir() if d.is_dir())
      paths, labels = [], []
      for label, c in enumerate(classes):
        for f in sorted((tree / name / c).iterdir()):
          if f.suffix.lower() in IMAGE_EXTENSIONS:
            paths.append(str(f))
            labels.append(label)
      lists[name] = (paths, labels)
      seen[name] = {"count": len(paths), "classes": classes, "sha256": files_digest(
          f"{classes[l]}/{Path(p).name}" for p, l in zip(paths, labels))}

    def load(path, label):
      image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
      image = tf.image.resize(image, (size, size))  # bilinear, float32
      return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), label

    shear = math.sin(math.radians(AUGMENT["shear_range"]))  # ImageDataGenerator's shear matrix
    augment = keras.Sequential([
        keras.layers.RandomRotation(AUGMENT["rotation_range"] / 360.0, fill_mode="nearest",
                                    seed=args.seed),
        keras.layers.RandomTranslation(AUGMENT["height_shift_range"],
                                       AUGMENT["width_shift_range"], fill_mode="nearest",
                                       seed=args.seed + 1),
        keras.layers.RandomShear(x_factor=shear, y_factor=0.0, fill_mode="nearest",
                                 seed=args.seed + 2),
        keras.layers.RandomZoom(AUGMENT["zoom_range"], AUGMENT["zoom_range"],
                                fill_mode="nearest", seed=args.seed + 3),
        keras.layers.RandomFlip("horizontal", seed=args.seed + 4),
    ], name="augment")

    def train_map(images, labels):
      images = augment(tf.cast(images, tf.float32), training=True)
      return mobilenet.preprocess_input(images), labels

    def val_map(images, labels):
      return mobilenet.preprocess_input(tf.cast(images, tf.float32)), labels

    def dataset(name):
      return tf.data.Dataset.from_tensor_slices(lists[name]).map(load, num_parallel_calls=AUTOTUNE)

    n_train = len(lists["train"][0])
    train = (dataset("train").cache().shuffle(n_train, seed=args.seed, reshuffle_each_iteration=True)
             .batch(batch).map(train_map, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE))
    val = (dataset("val").cache().batch(batch).map(val_map, num_parallel_calls=AUTOTUNE)
           .prefetch(AUTOTUNE))
    steps = {"train": math.ceil(n_train / batch), "val": math.ceil(len(lists["val"][0]) / batch)}
  emit("files", **seen, steps=steps)

  t_model = time.perf_counter()
  base = keras.applications.MobileNet(input_shape=(size, size, 3), alpha=0.25, include_top=False,
                                      weights=str(args.weights))
  inputs = keras.Input((size, size, 3))
  x = base(inputs)  # no training=False: BatchNorm trains once the base is unfrozen (phase 2)
  x = keras.layers.GlobalAveragePooling2D()(x)
  outputs = keras.layers.Dense(2, activation="softmax")(x)
  model = keras.Model(inputs, outputs)
  emit("ready", data_s=t_model - t_ready, model_s=time.perf_counter() - t_model)

  class Timer(keras.callbacks.Callback):
    def __init__(self, phase):
      super().__init__()
      self.phase = phase

    def on_epoch_begin(self, epoch, logs=None):
      self.t0, self.first_batch_s, self.batches = time.perf_counter(), None, 0

    def on_train_batch_end(self, batch, logs=None):
      self.batches += 1
      if self.first_batch_s is None:
        self.first_batch_s = time.perf_counter() - self.t0

    def on_epoch_end(self, epoch, logs=None):
      logs = logs or {}
      emit("epoch", epoch=epoch + 1, phase=self.phase, epoch_s=time.perf_counter() - self.t0,
           first_batch_s=self.first_batch_s, steps=self.batches,
           val_accuracy=float(logs.get("val_accuracy", float("nan"))),
           val_loss=float(logs.get("val_loss", float("nan"))),
           train_accuracy=float(logs.get("accuracy", float("nan"))),
           train_loss=float(logs.get("loss", float("nan"))))

  done = 0
  for phase, epochs, lr, trainable in (("frozen", args.frozen_epochs, 1e-3, False),
                                       ("finetune", args.finetune_epochs, 1e-4, True)):
    if epochs <= 0:
      continue
    base.trainable = trainable
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    emit("fit_start", phase=phase)
    model.fit(train, validation_data=val, epochs=done + epochs, initial_epoch=done, verbose=2,
              callbacks=[Timer(phase)])
    done += epochs
  emit("done")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("child", choices=["keras-flow", "keras-tfdata"])
  p.add_argument("--tree", required=True)
  p.add_argument("--weights", type=Path, required=True)
  p.add_argument("--size", type=int, default=128)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--frozen-epochs", type=int, default=2)
  p.add_argument("--finetune-epochs", type=int, default=3)
  run(p.parse_args(argv))


if __name__ == "__main__":
  main()
