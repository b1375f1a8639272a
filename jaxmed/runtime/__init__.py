"""How jaxmed runs: XLA and allocator settings, devices and processes, signals, paths, progress."""
