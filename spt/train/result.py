"""What `finetune` returns: the run, how it ended, its checkpoints and what its defense did after training."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from spt.store import queries


@dataclass(frozen=True)
class CheckpointInfo:
    """One saved checkpoint of a run (the `checkpoint` row, without its metadata)."""

    id: str
    step: int
    kind: str  # lora | full | merged
    path: str
    is_final: bool
    content_hash: str | None = None


@dataclass
class FinetuneResult:
    """One fine-tuning run as `finetune` left it.

    `reused`: a finished run with the same identity was found and nothing was trained. `post_train`:
    what the defense did after the last step (SafeLoRA's projection record), keyed by nothing else, so
    a new defense reports here without a field of its own. `rank`: the process under `accelerate launch`
    (only rank 0 writes and reports; the others return with empty checkpoints).
    """

    run_id: str
    status: str
    kind: str
    reused: bool = False
    steps: int | None = None
    resumed_from_step: int | None = None
    final_losses: dict[str, float] = field(default_factory=dict)
    checkpoints: list[CheckpointInfo] = field(default_factory=list)
    defense: str | None = None
    post_train: dict[str, Any] | None = None
    final_losses_post_defense: dict[str, float] | None = None
    rank: int = 0

    @property
    def final_checkpoint(self) -> CheckpointInfo | None:
        return next((c for c in self.checkpoints if c.is_final), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneResult:
        """The result back from its `to_dict()` / `spt finetune --json` form."""
        return cls(**{**data, "checkpoints": [CheckpointInfo(**c) for c in data.get("checkpoints", [])]})


def checkpoint_infos(store: Any, run_id: str) -> list[CheckpointInfo]:
    """The run's checkpoints, oldest first."""
    with store.session() as s:
        return [CheckpointInfo(c.id, c.step, c.kind, c.path, c.is_final, c.content_hash)
                for c in queries.checkpoints(s, run_id)]


def reused_result(store: Any, run_id: str) -> FinetuneResult:
    """The result of a finished run found again (same identity): read back from the store."""
    from spt.store.models import Run

    with store.session() as s:
        run = s.get(Run, run_id)
    done = (run.config or {}).get("result", {})
    return FinetuneResult(run_id=run_id, status=run.status, kind=run.kind, reused=True, steps=done.get("steps"),
                          final_losses=done.get("final_losses", {}), checkpoints=checkpoint_infos(store, run_id),
                          defense=run.defense, post_train=done.get(run.defense or ""),
                          final_losses_post_defense=done.get("final_losses_post_defense"))
