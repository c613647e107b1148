"""spt: measure the safety-performance trade-off of fine-tuned language models.

Everything the CLI does is a library function: `spt.store` (the SQLite store), `spt.data` (HarmOR,
tasks, poison), `spt.models`, `spt.train`, `spt.eval`, `spt.judge`, `spt.frontier`, `spt.sweep`.
"""

__version__ = "0.1.0"
