"""One module per subcommand: parse flags, call the library, render with rich.

Each module exposes `register(app)`. Nothing here imports torch, transformers or other heavy
libraries at module level: they are imported inside the library functions the commands call.
"""
