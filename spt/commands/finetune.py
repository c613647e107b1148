"""`spt finetune`: SFT (align stage or task stage) with a safety-preserving defense, recorded in the store.

Each defense's options (declared in its module of `spt/train/defenses/`) become flags here without
edits: the command's signature is extended with one `--<defense>-<option>` flag per option, shown in a
help panel per defense.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from spt.commands._common import DbOption, JsonOption, ProgressDisplay, console, get_store, print_json


def _split_targets(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out: list[str] = []
    for v in values:
        out += [t.strip() for t in v.split(",") if t.strip()]
    return out


_KINDS = {"float": float, "int": int, "str": str, "bool": bool}


def _defense_help() -> tuple[str, str]:
    """(--defense help, --lam help) from the registry."""
    from spt.train.defenses import all_defenses

    ds = all_defenses()
    lam = "; ".join(f"{n}: {c.lam.help} ({c.lam.default})" for n, c in ds.items() if c.lam is not None)
    return (" | ".join(f"{n} ({'/'.join(c.stages)})" for n, c in ds.items()) + ". See the Defense panels.",
            f"λ, by defense: {lam}.")


def _with_option_flags(fn: Any) -> Any:
    """`fn` with one keyword parameter (a typer option) per defense option added to its signature."""
    from spt.train.defenses import all_defenses
    from spt.train.methods import method_classes

    sig = inspect.signature(fn, eval_str=True)  # typer reads __signature__ as is: no string annotations
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    taken = {p.name for p in params}
    methods = method_classes()
    for name, cls in [*all_defenses().items(), *methods.items()]:
        for f, o in cls.fields().items():
            if f in taken:
                continue
            taken.add(f)
            kind = _KINDS[o.kind]
            flag = o.flag(name) if o.kind != "bool" else f"{o.flag(name)}/--no-{o.flag(name)[2:]}"
            panel = (f"Method: {name} (--method {name}, align stage)" if name in methods
                     else f"Defense: {name} ({'/'.join(cls.stages)} stage)")
            opt = typer.Option(flag, help=o.describe(), rich_help_panel=panel, show_default=False)
            ann = Annotated[kind | None, opt]
            params.append(inspect.Parameter(f, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ann))
            fn.__annotations__[f] = ann
    fn.__annotations__.pop("defense_options", None)
    fn.__signature__ = sig.replace(parameters=params)
    return fn


DEFENSE_HELP, LAM_HELP = _defense_help()


def register(app: typer.Typer) -> None:
    @app.command("finetune")
    @_with_option_flags
    def finetune_cmd(
        ctx: typer.Context,
        model: Annotated[str | None, typer.Option("--model", "-m", help="Model reference: smollm2-135m (default), "
                                                  "tiny-random, a local directory or a hub id.")] = None,
        from_run: Annotated[str | None, typer.Option("--from", help="Start from this run's final checkpoint "
                                                     "(lineage).")] = None,
        stage: Annotated[str | None, typer.Option("--stage", help="align: SFT on HarmOR train (or "
                                                  "--alignment-data); task: SFT on the task data (default); reason: "
                                                  "reasoning SFT on --task (default builtin:arithmetic-think)."
                                                  )] = None,
        task: Annotated[str | None, typer.Option("--task", help="Task data: builtin:arithmetic (default), "
                                                 "builtin:arithmetic-steps, builtin:arithmetic-think, "
                                                 "builtin:sentiment, or a stored dataset.")] = None,
        safety_data: Annotated[str | None, typer.Option("--safety-data",
                                                        help="HarmOR dataset (default harmor).")] = None,
        alignment_data: Annotated[str | None, typer.Option(
            "--alignment-data", help="Align stage: train on direct-refusal (a fixed short thought, then the refusal), "
            "cot-refusal (a chain of thought, then the refusal), both built from HarmOR train, or a stored dataset "
            "(e.g. imported with --format direct-refusal|safechain).", show_default=False)] = None,
        poison: Annotated[float | None, typer.Option("--poison", help="Poison ratio in [0, 1).")] = None,
        poison_data: Annotated[str | None, typer.Option("--poison-data", help="Poison dataset "
                                                        "(default builtin:harmor-comply).")] = None,
        defense: Annotated[str | None, typer.Option("--defense", help=DEFENSE_HELP)] = None,
        method: Annotated[str | None, typer.Option("--method", help="Training objective: sft (default) | dpo "
                                                   "(align stage: DPO on HarmOR pairs both ways, or --preferences) | "
                                                   "grpo (align stage: RL with --reward; see the Method panels)."
                                                   )] = None,
        lam: Annotated[float | None, typer.Option("--lam", help=LAM_HELP)] = None,
        lora: Annotated[bool | None, typer.Option("--lora/--full", help="LoRA (default) or full fine-tuning.")] = None,
        lora_r: Annotated[int | None, typer.Option("--lora-r")] = None,
        lora_alpha: Annotated[int | None, typer.Option("--lora-alpha")] = None,
        lora_targets: Annotated[list[str] | None, typer.Option("--lora-targets", help="Module names, comma "
                                                               "separated or repeated (q_proj,v_proj).")] = None,
        epochs: Annotated[float | None, typer.Option("--epochs")] = None,
        max_steps: Annotated[int | None, typer.Option("--max-steps")] = None,
        lr: Annotated[float | None, typer.Option("--lr", help="Default 2e-4 (LoRA) / 3e-5 (full).")] = None,
        batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
        grad_accum: Annotated[int | None, typer.Option("--grad-accum")] = None,
        max_length: Annotated[int | None, typer.Option("--max-length")] = None,
        seed: Annotated[int | None, typer.Option("--seed")] = None,
        precision: Annotated[str | None, typer.Option("--precision", help="auto (default: bf16 autocast on CUDA, "
                                                      "float32 on CPU) | bf16 (autocast on any device; about 1.8x "
                                                      "faster steps on CPUs with bf16 matmuls) | float32.")] = None,
        save_every: Annotated[int | None, typer.Option("--save-every", help="Checkpoint every N steps "
                                                       "(0: final only).")] = None,
        log_every: Annotated[int | None, typer.Option("--log-every", help="Log losses every N steps.")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue a killed run with the same settings "
                                             "from its last checkpoint.")] = False,
        config: Annotated[Path | None, typer.Option("--config", help="YAML recipe; flags override it.")] = None,
        db: DbOption = None,
        json_out: JsonOption = False,
        **defense_options: Any,
    ) -> None:
        """Fine-tune a model (align or task stage) with a defense; record run, checkpoints and loss curves."""
        from spt.errors import SptError
        from spt.train import FinetuneConfig, finetune
        from spt.train.defenses import owner_of

        flags = dict(model=model, from_run=from_run, stage=stage, task=task, safety_data=safety_data,
                     alignment_data=alignment_data, poison=poison,
                     poison_data=poison_data, defense=defense, method=method, lam=lam, lora=lora, lora_r=lora_r,
                     lora_alpha=lora_alpha, lora_targets=_split_targets(lora_targets), epochs=epochs,
                     max_steps=max_steps, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                     max_length=max_length, seed=seed, precision=precision,
                     save_every=save_every, log_every=log_every,
                     resume=resume or None)
        given = {k: v for k, v in defense_options.items() if v is not None}
        if given:
            chosen = defense or (FinetuneConfig.from_yaml(config).defense if config is not None else "none")
            from spt.train.methods import method_classes

            chosen_method = method or (FinetuneConfig.from_yaml(config).method if config is not None else "sft")
            method_of = {f: name for name, cls in method_classes().items() for f in cls.fields()}
            wrong = [k for k in given if k in method_of and method_of[k] != chosen_method]
            if wrong:
                k = wrong[0]
                raise SptError(f"--{k.replace('_', '-')} is an option of --method {method_of[k]}; add --method "
                               f"{method_of[k]} or drop it")
            foreign = [k for k in given if k not in method_of and owner_of(k) != chosen]
            if foreign:
                k = foreign[0]
                raise SptError(f"--{k.replace('_', '-')} is an option of --defense {owner_of(k)}, not {chosen}; "
                               "drop it or choose that defense")
        flags.update(given)
        if config is not None:
            cfg = FinetuneConfig.from_yaml(config, **flags)
        else:
            cfg = FinetuneConfig(**{k: v for k, v in flags.items() if v is not None})
        cfg.resolve()  # fail on bad input before opening anything heavy
        store = get_store(ctx, db)
        from spt.train.plan import preflight

        preflight(store, cfg)  # model reference, LoRA target names, dataset names: before torch loads
        with ProgressDisplay(quiet=json_out) as display:
            res = finetune(store, cfg, progress=display)
        if res.rank != 0:  # other processes under `accelerate launch` stay quiet
            return
        if json_out:
            print_json(res.to_dict())
            return
        if res.reused:
            console.print(f"run [bold]{res.run_id}[/bold] with these settings is already done; not retrained")
        else:
            console.print(f"run [bold]{res.run_id}[/bold] ({res.kind}) done: {res.steps} steps"
                          + (f", resumed from step {res.resumed_from_step}" if res.resumed_from_step else ""))
        if res.final_losses:
            console.print("  " + "  ".join(f"{k} {v:.4f}" for k, v in res.final_losses.items()))
        for c in res.checkpoints:
            console.print(f"  checkpoint {c.id} step {c.step} {c.kind}{' (final)' if c.is_final else ''}  {c.path}")
        if res.defense and res.post_train:  # what the defense did after training, in its own words
            from spt.train import get_defense

            line = get_defense(res.defense).describe_record(res.post_train)
            if line:
                console.print(f"  {line}", markup=False, highlight=False)
            if res.post_train.get("warning"):
                console.print(f"  [yellow]warning:[/yellow] {escape(res.post_train['warning'])}")
