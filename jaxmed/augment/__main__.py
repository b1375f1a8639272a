"""Preview a config's augmentation: a grid PNG, each row one training image then augmented copies.

  python -m jaxmed.augment --config demo --out grid.png [--n 8] [--rows 4]
  python -m jaxmed.augment --config configs/demo.py --config.augment.preset=xray --out grid.png

The config is chosen like jaxmed.train's (a shipped name or a file, `--config.KEY=VALUE`
overrides); its `augment` section is what the train step would apply.
"""

import sys

from jaxmed.runtime import cli


def define_flags(values):
  from absl import flags
  flags.DEFINE_string("out", "augment_grid.png", "Output PNG path.", flag_values=values)
  flags.DEFINE_integer("n", 8, "Augmented versions per image (columns after the original).",
                       flag_values=values)
  flags.DEFINE_integer("rows", 4, "Number of training images (rows).", flag_values=values)
  flags.DEFINE_integer("seed", 0, "PRNG seed of the augmentation.", flag_values=values)


def load_images(config, count: int):
  """`count` training images spread over the classes, decoded as the trainer decodes them."""
  import numpy as np
  from jaxmed.data import folder
  if config.data.get("synthetic", False):
    from jaxmed.data import synthetic
    synthetic.ensure_demo_dataset(config.data.root)
  classes, lists = folder.scan(config.data.root)
  train = lists["train"]
  labels = np.asarray(train.labels)
  # round-robin over classes so every class shows up
  per_class = [np.flatnonzero(labels == k) for k in range(len(classes))]
  picks = [per_class[i % len(classes)][i // len(classes)] for i in range(count)
           if i // len(classes) < len(per_class[i % len(classes)])]
  files = folder.FileList([train.paths[i] for i in picks], [train.labels[i] for i in picks])
  split, errors = folder.decode_files(files, config.data.image_size)
  for message in errors:
    print(f"warning: {message}", file=sys.stderr)
  return split.images, split.labels, classes


def label_text(weights, classes) -> str:
  order = weights.argsort()[::-1]
  if weights[order[1]] < 1e-3:
    return classes[order[0]]
  return "\n".join(f"{weights[k]:.2f} {classes[k]}" for k in order[:2])


def write_grid(path, originals, augmented, soft_labels, labels, classes):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows, cols = augmented.shape[:2]
  fig, axes = plt.subplots(rows, cols + 1, figsize=(1.6 * (cols + 1), 1.8 * rows), squeeze=False)
  for r in range(rows):
    images = [originals[r]] + list(augmented[r])
    titles = [f"{classes[labels[r]]}\n(original)"] + [
        label_text(soft_labels[r, c], classes) for c in range(cols)]
    for c, (image, title) in enumerate(zip(images, titles)):
      axes[r, c].imshow(image.clip(0, 255).astype("uint8"))
      axes[r, c].set_title(title, fontsize=6)
      axes[r, c].axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


@cli.command
def main(argv) -> int:
  import jax
  import numpy as np
  from jaxmed.augment import make_augmenter
  values = cli.parse_config_flags(argv, "python -m jaxmed.augment", define_flags)
  config = values.config
  if "augment" not in config:
    raise cli.UserError(
        "the config has no `augment` section; add e.g. c.augment = ml_collections.ConfigDict("
        "dict(preset='mri')) or Keras options (rotation_range=10, horizontal_flip=True, ...)")
  augmenter = make_augmenter(config.augment)
  if augmenter is None:
    raise cli.UserError("every option in config.augment is off: nothing to preview")
  images, labels, classes = load_images(config, values.rows)
  rows, n = len(images), values.n
  # one batch of rows * n images, so mixup/cutmix partners are other training images
  batch = np.tile(images, (n, 1, 1, 1))
  onehot = jax.nn.one_hot(np.tile(labels, n), len(classes))
  out, soft = jax.jit(augmenter)(jax.random.PRNGKey(values.seed), batch, onehot)
  out = np.asarray(out).reshape(n, rows, *images.shape[1:]).swapaxes(0, 1)
  soft = np.asarray(soft).reshape(n, rows, -1).swapaxes(0, 1)
  write_grid(values.out, images, out, soft, labels, classes)
  print(f"wrote {values.out}: {rows} images x {n} augmentations ({config.data.root})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
