"""The training-method registry: how a run turns data into gradients, beside the defense that protects it.

`sft` (the default: spt's loop with a defense from `spt.train.defenses`), `dpo` (`spt.train.dpo`:
preference pairs, in spt's loop in place of the defense) and `grpo` (`spt.train.grpo`: reinforcement
learning with spt's rewards on TRL's GRPOTrainer, its own loop). A method other than SFT declares its
options as a `Defense` does (`Option`s become settings, YAML keys, sweep axes and `spt finetune` flags);
only the chosen method's options are kept and enter the run identity, so identities of SFT runs are
unchanged.
"""

from __future__ import annotations

from typing import Any

from spt.errors import SptError

METHODS = ("sft", "dpo", "grpo")


def method_classes() -> dict[str, Any]:
    """{name: class} of the methods with options (every method but sft)."""
    from spt.train.dpo import DPOMethod
    from spt.train.grpo import GRPOMethod

    return {"dpo": DPOMethod, "grpo": GRPOMethod}


def option_fields() -> list[str]:
    """Config fields of every method's options."""
    return [f for cls in method_classes().values() for f in cls.fields()]


def check_method(config: Any) -> None:
    """SptError for an unknown `--method` or a run the method cannot do."""
    method = getattr(config, "method", None) or "sft"
    if method not in METHODS:
        raise SptError(f"unknown `method` {method!r}; use one of {', '.join(METHODS)}")
    cls = method_classes().get(method)
    if cls is not None:
        cls.validate_config(config)


def resolve_method(config: Any, explicit_lam: bool = False) -> None:
    """Check `config.method`, fill the chosen method's option defaults and clear the others', in place."""
    config.method = getattr(config, "method", None) or "sft"
    classes = method_classes()
    if config.method in classes:
        classes[config.method].resolve_options(config, explicit_lam)
    for name, cls in classes.items():  # like defenses' options: other methods' never reach a run
        if name != config.method:
            for f in cls.fields():
                setattr(config, f, None)
    check_method(config)


def method_identity(config: Any) -> dict[str, Any]:
    """The method's part of the run identity: nothing for SFT (identities of SFT runs are unchanged)."""
    method = getattr(config, "method", None) or "sft"
    cls = method_classes().get(method)
    if cls is None:
        return {}
    return {"method": method, **cls.identity(config)}


def method_for(config: Any) -> Any:
    """The object spt's loop calls in place of the defense (dpo), or None (sft: the defense runs; grpo runs
    its own loop, see `uses_own_loop`)."""
    if (getattr(config, "method", None) or "sft") == "dpo":
        from spt.train.dpo import DPOMethod

        return DPOMethod(config)
    return None


def uses_own_loop(config: Any) -> bool:
    return (getattr(config, "method", None) or "sft") == "grpo"
