"""The name a typo most likely meant, for every "did you mean ...?" jaxmed prints (config
names, config fields, option values)."""

import difflib


def _edits(a: str, b: str) -> int:
  """Optimal string alignment distance: insertions, deletions, substitutions, swaps of two."""
  d = [[i + j if not i * j else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
  for i in range(1, len(a) + 1):
    for j in range(1, len(b) + 1):
      d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
      if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
        d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
  return d[-1][-1]


def nearest(value, options) -> str | None:
  """The option a typo most likely meant: the same name under a prefix ('resnet18' ->
  'torchvision/resnet18'), an abbreviation ('val_acc' -> 'val_accuracy'), the fewest edits
  (difflib alone prefers 'adamax' to 'adam' for 'adma'), else difflib's closest."""
  if not isinstance(value, str) or not value or not options:
    return None
  lowered = {o.lower(): o for o in options}
  typed = value.lower()
  prefixed = [o for o in lowered if o.rsplit("/", 1)[-1] == typed] or sorted(
      (o for o in lowered if o.startswith(typed)), key=len)
  best = prefixed[0] if prefixed else min(
      lowered, key=lambda o: (_edits(typed, o), -difflib.SequenceMatcher(None, typed, o).ratio()))
  if not prefixed and _edits(typed, best) > max(1, len(typed) // 4):
    near = difflib.get_close_matches(typed, list(lowered), n=1, cutoff=0.6)
    best = near[0] if near else None
  return lowered[best] if best else None
