"""One lock for imports that may run while another thread imports.

etils' `epy.lazy_imports()` (opened while grain and tensorflow_datasets are imported) replaces
`builtins.__import__` for the whole process while its block runs, so whatever another thread
imports meanwhile gets LazyModule stand-ins for its names. Seen on CI (Python 3.12, grain 0.2.18,
orbax-checkpoint 0.12.8): the run's background import of orbax (training/loop.py) met the streaming
path's `import grain`, and the first checkpoint failed with "'LazyModule' object is not callable"
at `ocp.args.StandardSave`. jaxmed imports orbax, grain and tensorflow_datasets under this lock.
"""

import threading

IMPORTS = threading.RLock()
