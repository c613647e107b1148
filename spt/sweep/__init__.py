"""Sweeps: the product defense × λ × poison × seed, run locally or as a Slurm array, then gathered.

    from spt.sweep import SweepSpec, plan_sweep, run_sweep
    spec = SweepSpec(model="tiny-random", task="arithmetic", defenses=["none", "anchor"], lams=[0.1, 0.3])
    plan_sweep(spec)           # [{"index": 0, "defense": "none", ...}, ...]
    run_sweep(store, spec)     # finetune -> evaluate -> judge per configuration, failures recorded
"""

from spt.sweep.plan import SweepSpec, config_label, plan_sweep, sweep_id, sweep_tag
from spt.sweep.run import Stages, default_stages, run_config, run_sweep
from spt.sweep.slurm import SlurmOptions, gather, gather_script, slurm_script, write_slurm

__all__ = [
    "SlurmOptions", "Stages", "SweepSpec", "config_label", "default_stages", "gather", "gather_script",
    "plan_sweep", "run_config", "run_sweep", "slurm_script", "sweep_id", "sweep_tag", "write_slurm",
]
