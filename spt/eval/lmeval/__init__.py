"""Utility benchmarks through lm-evaluation-harness: MMLU, GSM8K, ARC, HellaSwag, ... as spt evaluations.

lm-eval owns what a benchmark *is*: its task YAMLs, prompts, few-shot sampling, filters and per-sample
metrics. spt owns where the results go: every document becomes an `Item` (in a `Dataset` per task),
every sample a `Generation` with its per-sample metric values, every task metric a `Metric` row with
n, n_unscored and an interval from `spt.metrics.estimate`, all under one content-identified, leased,
resumable `Evaluation` (`config["kind"] = "benchmark"`).

Modules: `tasks` (names and YAML paths -> lm-eval tasks, their identity), `model` (an lm-eval model from
an spt target and engine), `samples` (running lm-eval's requests a chunk of documents at a time and
turning them into sample records), `metrics` (metric rows from stored samples), `run` (the evaluation:
`evaluate_benchmark`). lm-eval is an optional extra (`pip install 'spt[bench]'`); nothing here imports it
at module level.
"""

from __future__ import annotations

from typing import Any

from spt.errors import SptError

INSTALL = "pip install 'spt[bench]'"
MIN_VERSION = (0, 4, 13)  # TaskManager.load() -> {"tasks", "groups"}, Group.aggregate, samples= (see DEVELOPING)


def require_lm_eval() -> Any:
    """The `lm_eval` module; one-line SptError naming the install when it is missing or too old."""
    try:
        import lm_eval
    except ImportError:
        raise SptError(f"benchmarks need lm-evaluation-harness, which is not installed; {INSTALL}") from None
    version = lm_eval_version()
    parts = tuple(int(p) for p in version.split(".")[:3] if p.isdigit())
    if parts < MIN_VERSION or parts[:2] != MIN_VERSION[:2]:
        want = ".".join(map(str, MIN_VERSION))
        raise SptError(f"lm-eval {version} is installed; spt's benchmarks need lm-eval >={want},<0.5 ({INSTALL})")
    return lm_eval


def lm_eval_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:
        import lm_eval

        return str(getattr(lm_eval, "__version__", "unknown"))


def quiet_lm_eval() -> None:
    """lm-eval logs every task it builds at INFO and draws tqdm bars; spt reports progress itself."""
    import logging

    for name in ("lm_eval", "lm-eval"):
        logging.getLogger(name).setLevel(logging.WARNING)
