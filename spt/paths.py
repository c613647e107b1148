"""Where spt keeps things: the default store, model cache and checkpoint directories."""

from __future__ import annotations

from pathlib import Path


def spt_home() -> Path:
    """`$SPT_HOME`, else the platform's user-data directory for spt."""
    from spt.env import env_path

    home = env_path("SPT_HOME")
    if home is not None:
        return home
    from platformdirs import user_data_dir

    return Path(user_data_dir("spt", appauthor=False))


def default_db_path() -> Path:
    """The store used when no --db is given: `$SPT_DB`, else `$SPT_HOME/spt.db`, else user data dir."""
    from spt.env import env_path

    return env_path("SPT_DB") or spt_home() / "spt.db"


def cache_dir() -> Path:
    """Converted models and other derived files (`$SPT_CACHE`, else `$SPT_HOME/cache`)."""
    from spt.env import env_path

    return env_path("SPT_CACHE") or spt_home() / "cache"


def artifacts_dir(db_path: Path) -> Path:
    """Checkpoints live next to the store that records them: `<store>.artifacts/`."""
    return db_path.with_name(db_path.name + ".artifacts")
