"""Classification losses for imbalanced data: class weights, label smoothing, focal loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax


def class_weights(option, counts: np.ndarray) -> np.ndarray | None:
  """None, 'balanced' (sklearn's n / (K * count_c)) or an explicit list -> float32 (K,)."""
  counts = np.asarray(counts, np.float64)
  if option is None or str(option).lower() in ("", "none"):  # 'None' from the command line
    return None
  if option == "balanced":
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)
  if isinstance(option, str):
    option = [float(w) for w in option.split(",")]
  weights = np.asarray(option, np.float32)
  if weights.shape != counts.shape:
    raise ValueError(f"train.class_weights has {weights.size} values for {counts.size} classes")
  return weights


def classification_loss(logits, targets, *, weights=None, focal_gamma: float = 0.0,
                        label_smoothing: float = 0.0):
  """Per-example loss. `targets` are soft labels (N, K) (one-hot unless mixup/cutmix mixed them).

  Class weights scale each example by the weight of its (soft) class, as Keras' class_weight
  does; focal loss (Lin et al. 2017) down-weights examples the model already gets right.
  """
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32))
  per_class = -targets * log_p
  if focal_gamma:
    per_class = per_class * (1.0 - jnp.exp(log_p)) ** focal_gamma
  loss = per_class.sum(-1)
  if weights is not None:
    loss = loss * (targets @ jnp.asarray(weights))
  return loss
