"""jaxmed: fast JAX/Flax transfer learning for small medical image datasets.

  import jaxmed
  run = jaxmed.fit(jaxmed.config("demo"), workdir="runs/demo")

The Python API is jaxmed/api.py; the command lines (`python -m jaxmed.train`, ...) call the same
library. Importing jaxmed sets jaxmed's XLA flags before JAX starts its backend.
"""

from jaxmed.runtime import xla_flags as _xla_flags

_xla_flags.configure()

from jaxmed.runtime.run_info import JAXMED_VERSION as __version__  # noqa: E402

from jaxmed.api import (config, crossval, demo_data, doctor, evaluate, fit, load_run,  # noqa: E402
                        predict)

__all__ = ["config", "crossval", "demo_data", "doctor", "evaluate", "fit", "load_run", "predict"]
