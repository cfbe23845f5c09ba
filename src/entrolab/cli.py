"""Command line: ``entrolab demo | sft | train | train-prefs | dno | eval | report | compare | sweep | diagnose |
list | validate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from entrolab.registry import ConfigError


def _cmd_list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from entrolab.components import registries

    regs = registries()
    stages = [args.stage] if args.stage else list(regs)
    for s in stages:
        if s not in regs:
            raise ConfigError(f"unknown stage '{s}'; stages: {', '.join(regs)}")
    console = Console(width=160)
    for s in stages:
        table = Table(title=f"{s} ({len(regs[s])})", show_lines=False)
        table.add_column("name", style="bold")
        table.add_column("paper")
        table.add_column("summary")
        for e in regs[s]:
            table.add_row(e.name, e.citation, e.summary)
        console.print(table)
    return 0


def _cmd_validate(args) -> int:
    from entrolab.components import build_components
    from entrolab.config import load_recipe, yaml_load

    raw = yaml_load(Path(args.recipe).read_text()) if Path(args.recipe).is_file() else None
    if isinstance(raw, dict) and {"data", "loss", "reference", "dno"} & raw.keys():  # a preference recipe
        from entrolab.preference.config import build_loss, load_pref_recipe

        pref = load_pref_recipe(args.recipe, args.overrides)
        build_loss(pref)
        print(f"{args.recipe}: OK ({pref.name}; preference loss={pref.loss['name']}, reference={pref.reference}"
              f"{', dno' if pref.dno else ''})")
        return 0
    recipe = load_recipe(args.recipe, args.overrides)
    comps = build_components(recipe)
    needs = sorted(comps.requires())
    print(f"{args.recipe}: OK ({recipe.name}; surrogate={recipe.objective.surrogate['name']}, "
          f"advantage={recipe.advantage['name']}, needs={needs or 'nothing extra'})")
    return 0


def _cmd_train(args) -> int:
    from entrolab.config import load_recipe
    from entrolab.trainer import Trainer

    if args.allow_recipe_change and not args.resume:
        raise ValueError("--allow-recipe-change only applies with --resume")
    recipe = load_recipe(args.recipe, args.overrides)
    trainer = Trainer(recipe, resume=args.resume, overwrite=args.overwrite,
                      allow_recipe_change=args.allow_recipe_change, progress=not args.quiet)
    run_dir = trainer.train()
    if args.eval:  # base (cached) + final evaluations and the report
        from entrolab.eval_runner import evaluate_run

        evaluate_run(trainer, progress=not args.quiet)
    from entrolab.summary import print_run_summary

    print(f"run directory: {run_dir}")
    print_run_summary(run_dir)
    return 0


def _cmd_train_prefs(args) -> int:
    from entrolab.preference.config import load_pref_recipe
    from entrolab.preference.trainer import PreferenceTrainer, evaluate_prefs_run

    if args.allow_recipe_change and not args.resume:
        raise ValueError("--allow-recipe-change only applies with --resume")
    trainer = PreferenceTrainer(load_pref_recipe(args.recipe, args.overrides), resume=args.resume,
                                overwrite=args.overwrite, allow_recipe_change=args.allow_recipe_change,
                                progress=not args.quiet)
    run_dir = trainer.train()
    if args.eval:
        evaluate_prefs_run(trainer, progress=not args.quiet)
    print(f"run directory: {run_dir}")
    return 0


def _cmd_dno(args) -> int:
    from entrolab.preference.config import load_pref_recipe
    from entrolab.preference.dno import run_dno

    states = run_dno(load_pref_recipe(args.recipe, args.overrides), resume=args.resume, overwrite=args.overwrite,
                     allow_recipe_change=args.allow_recipe_change, progress=not args.quiet)
    for s in states:
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items()))
    return 0


def _cmd_sft(args) -> int:
    from entrolab.sft import load_sft_cfg, run_sft

    config, overrides = args.config, list(args.overrides)
    # `entrolab sft task.name=x` (no YAML): argparse puts the first override in `config`. An
    # argument with '=' that is not an existing file is an override.
    if config is not None and "=" in config and not Path(config).is_file():
        config, overrides = None, [config, *overrides]
    out = run_sft(load_sft_cfg(config, overrides))
    print(f"base model: {out}")
    return 0


def _cmd_eval(args) -> int:
    from entrolab.eval_runner import evaluate_path

    path = evaluate_path(Path(args.model), recipe=args.recipe, overrides=args.overrides, label=args.label,
                         out=Path(args.out) if args.out else None)
    print(f"evaluation: {path}")
    return 0


def _cmd_report(args) -> int:
    from entrolab.report import write_run_report

    print(f"report: {write_run_report(Path(args.run_dir))}")
    return 0


def _cmd_compare(args) -> int:
    from entrolab.report import write_comparison

    print(f"comparison: {write_comparison([Path(r) for r in args.run_dirs], Path(args.out))}")
    return 0


def _cmd_diagnose(args) -> int:
    from entrolab.diagnostics.diagnose import diagnose

    print(f"diagnostics: {diagnose([Path(p) for p in args.paths], Path(args.out), seed=args.seed, base=args.base)}")
    return 0


def _cmd_demo(args) -> int:
    from entrolab.demo import run_demo
    from entrolab.summary import print_run_summary

    report = run_demo(out_dir=Path(args.out), overrides=args.overrides, fresh_base=args.fresh_base)
    print_run_summary(report.parent.parent)
    return 0


def _cmd_sweep(args) -> int:
    from entrolab.sweep import run_sweep

    page = run_sweep(args.recipes, seeds=args.seeds, out_dir=Path(args.out),
                     base=Path(args.base) if args.base else None, overrides=args.set, progress=not args.quiet)
    print(f"comparison: {page}\nsummary: {Path(args.out) / 'summary.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="entrolab", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("demo", help="build a Countdown base model, train it with GRPO, evaluate, report")
    s.add_argument("--out", default="runs/demo")
    s.add_argument("--fresh-base", action="store_true", help="retrain the base model even if cached")
    s.add_argument("overrides", nargs="*", help="recipe overrides key.sub=value for the GRPO run")
    s.set_defaults(fn=_cmd_demo)

    s = sub.add_parser("sft", help="train a testbed base model from scratch on task demonstrations")
    s.add_argument("config", nargs="?", default=None, help="SFT YAML (optional; key=value overrides alone work)")
    s.add_argument("overrides", nargs="*")
    s.set_defaults(fn=_cmd_sft)

    s = sub.add_parser("train", help="train a recipe")
    s.add_argument("recipe")
    s.add_argument("overrides", nargs="*", help="key.sub=value")
    fresh = s.add_mutually_exclusive_group()
    fresh.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint")
    fresh.add_argument("--overwrite", action="store_true",
                       help="replace the run already in run_dir (its checkpoints, logs, evals, report)")
    s.add_argument("--allow-recipe-change", action="store_true",
                   help="with --resume: accept recipe changes beyond steps/cadences/eval (recorded in the run)")
    s.add_argument("--eval", action="store_true",
                   help="after training, evaluate the starting model (as 'base', cached) and the final one, "
                        "and write the report")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=_cmd_train)

    for name, fn, what in (("train-prefs", _cmd_train_prefs, "train a preference recipe (recipes/prefs/*.yaml)"),
                           ("dno", _cmd_dno, "iterative on-policy preference training (DNO), a recipe with 'dno'")):
        s = sub.add_parser(name, help=what)
        s.add_argument("recipe")
        s.add_argument("overrides", nargs="*", help="key.sub=value")
        fresh = s.add_mutually_exclusive_group()
        fresh.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint/iteration")
        fresh.add_argument("--overwrite", action="store_true", help="replace the run already in run_dir")
        s.add_argument("--allow-recipe-change", action="store_true", help="with --resume: accept other recipe changes")
        if name == "train-prefs":
            s.add_argument("--eval", action="store_true",
                           help="evaluate the starting and final models, write the report")
        s.add_argument("--quiet", action="store_true", help="no progress bar")
        s.set_defaults(fn=fn)

    s = sub.add_parser("eval", help="evaluate a model folder or a run directory (n samples per prompt)")
    s.add_argument("model", help="HF model folder, or a run directory (uses its recipe and latest checkpoint)")
    s.add_argument("overrides", nargs="*", help="recipe overrides, e.g. eval.n_samples=16")
    s.add_argument("--recipe", default=None, help="recipe for task/eval settings (default: the run's)")
    s.add_argument("--label", default="eval")
    s.add_argument("--out", default=None, help="output JSON path")
    s.set_defaults(fn=_cmd_eval)

    s = sub.add_parser("report", help="write the HTML report of a run")
    s.add_argument("run_dir")
    s.set_defaults(fn=_cmd_report)

    s = sub.add_parser("compare", help="one page comparing several runs")
    s.add_argument("run_dirs", nargs="+")
    s.add_argument("--out", default="runs/compare")
    s.set_defaults(fn=_cmd_compare)

    s = sub.add_parser("diagnose", help="diagnostics report from rollout dumps (JSONL) or eval JSONs")
    s.add_argument("paths", nargs="+")
    s.add_argument("--out", default="runs/diagnose")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--base", default=None, help="run label of the base model (default: a run named 'base')")
    s.set_defaults(fn=_cmd_diagnose)

    s = sub.add_parser("sweep", help="several recipes x seeds from one base model, one comparison report")
    s.add_argument("recipes", nargs="+")
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    s.add_argument("--out", default="runs/sweep")
    s.add_argument("--base", default=None, help="base model folder (default: the demo's cached Countdown base)")
    s.add_argument("--set", nargs="*", default=[], help="overrides applied to every recipe")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=_cmd_sweep)

    s = sub.add_parser("list", help="every registered component with its paper")
    s.add_argument("stage", nargs="?", default=None)
    s.set_defaults(fn=_cmd_list)

    s = sub.add_parser("validate", help="check a recipe: schema, component names and hyperparameters")
    s.add_argument("recipe")
    s.add_argument("overrides", nargs="*")
    s.set_defaults(fn=_cmd_validate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as err:
        print(f"entrolab: config error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("entrolab: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a clear one-line error; the traceback is noise for users
        from entrolab.trainer import TrainingStopped

        if isinstance(err, (TrainingStopped, FileNotFoundError, ValueError)):
            print(f"entrolab: error: {err}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
