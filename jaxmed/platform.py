"""Backend choices made before JAX initialises (XLA flags must be set first)."""

import os

# Measured on a 2-core AVX-512 EPYC (shared/CPU_CONV_NOTES.md): routing convolutions back to XLA's
# own CPU kernels instead of YNNPACK was the fastest fp32 setting found (1x1 conv fb: 312 -> ~120 ms).
_CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def configure_xla_flags() -> None:
  """Adds jaxmed's CPU XLA flag unless the user opted out or already chose one.

  Set JAXMED_XLA_DEFAULTS=0 to leave XLA_FLAGS untouched. Has no effect once the JAX backend is up,
  which is why `jaxmed/__init__.py` calls it on import.
  """
  if os.environ.get("JAXMED_XLA_DEFAULTS", "1") == "0":
    return
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_experimental_ynn_fusion_type" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " " + _CPU_CONV_FLAG).strip()
