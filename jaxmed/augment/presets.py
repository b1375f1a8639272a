"""Named augmentation presets for medical images, and `resolve` (preset + explicit overrides).

Keys and meanings are Keras ImageDataGenerator's (see transforms.py), so a Keras config ports
line by line; a preset only fills in the keys the user did not set.
"""

PRESETS = {
    # Axial brain MRI slices (e.g. the Kaggle brain-tumour sets).
    "mri": {
        # Head position in the scanner varies by a few degrees; larger rotations make
        # orientations no scan has.
        "rotation_range": 10.0,
        # Slices are roughly centred by acquisition; small shifts/zoom cover framing and
        # head-size differences without cropping anatomy out.
        "width_shift_range": 0.05,
        "height_shift_range": 0.05,
        "zoom_range": 0.1,
        # No shear: anatomy is not sheared by the scanner, sheared brains are unrealistic.
        "shear_range": 0.0,
        # Left/right mirror is plausible for axial slices (the brain is nearly symmetric and
        # tumours occur on both sides); up/down is not (skull base vs vertex looks different).
        "horizontal_flip": True,
        "vertical_flip": False,
        # MRI intensities are not calibrated (arbitrary units, per-scan windowing), so
        # brightness/contrast jitter stands in for scanner and protocol differences.
        "brightness_range": (0.85, 1.15),
        "contrast_range": (0.85, 1.15),
        # Background outside the head is black: fill with black, not repeated edge pixels.
        "fill_mode": "constant",
        "cval": 0.0,
    },
    # Chest X-ray (PA/AP projections, e.g. pneumonia / COVID sets).
    "xray": {
        # Patients stand a little tilted; keep rotations small.
        "rotation_range": 7.0,
        # Framing and patient size vary more than in MRI: a bit more shift/zoom.
        "width_shift_range": 0.08,
        "height_shift_range": 0.08,
        "zoom_range": 0.1,
        # No shear: projections are not sheared.
        "shear_range": 0.0,
        # No vertical flip: the anatomy has an up (lungs above diaphragm).
        "vertical_flip": False,
        # No horizontal flip by default: the heart is on the patient's left and laterality
        # markers ('L'/'R') are burnt into the image, so a mirror makes an anatomically wrong
        # image a model can learn from; enable it explicitly if the task is symmetric.
        "horizontal_flip": False,
        # Exposure and detector processing differ between machines and sites.
        "brightness_range": (0.8, 1.2),
        "contrast_range": (0.8, 1.2),
        "gamma_range": (0.85, 1.15),
        # Edges of radiographs are collimator/background: repeating the edge is the least
        # conspicuous fill (a black band would be a shortcut feature).
        "fill_mode": "nearest",
    },
    "none": {},
}


def _as_dict(config) -> dict:
  if config is None:
    return {}
  if hasattr(config, "to_dict"):  # ml_collections.ConfigDict / FrozenConfigDict
    return config.to_dict()
  return dict(config)


def resolve(config) -> dict:
  """The augmentation options: `PRESETS[config['preset']]` updated with every other key given.

  `config` is a dict or ConfigDict (or None, meaning no augmentation). An unknown preset name
  raises ValueError listing the known ones.
  """
  options = _as_dict(config)
  name = options.pop("preset", None) or "none"
  if name not in PRESETS:
    raise ValueError(f"unknown augment.preset {name!r}; available: {', '.join(sorted(PRESETS))}")
  merged = dict(PRESETS[name])
  merged.update(options)
  return merged
