"""Command line: ``entrolab demo | sft | train | train-prefs | dno | eval | report | compare | sweep | diagnose |
convert | list | validate | prefs build | prefs check``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from entrolab.registry import ConfigError


def _cmd_list(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from entrolab.components import registries

    regs = registries()
    stages = [args.stage] if args.stage else list(regs)
    for s in stages:
        if s not in regs:
            raise ConfigError(f"unknown stage '{s}'; stages: {', '.join(regs)}")
    engines = _engine_support()
    console = Console(width=160)
    for s in stages:
        table = Table(title=f"{s} ({len(regs[s])})", show_lines=False)
        table.add_column("name", style="bold")
        table.add_column("paper")
        table.add_column("summary")
        for engine in engines:
            table.add_column(engine)
        reasons = []
        for e in regs[s]:
            cells = [fn(s, e.name) if fn else "?" for fn in engines.values()]
            # summaries hold math such as [h(y_w) − h(y_l)]: escape it, or rich reads it as a style tag
            table.add_row(e.name, escape(e.citation), escape(e.summary), *[c.split(":", 1)[0] for c in cells])
            reasons += [f"  {engine} {e.name}: {c.split(': ', 1)[1]}" for engine, c in zip(engines, cells) if ": " in c]
        console.print(table)
        if args.reasons and reasons:
            console.print("\n".join(reasons), markup=False, highlight=False)
    return 0


def _engine_support() -> dict:
    """Engine column → ``support(stage, name)`` ("yes" / "no: <reason>"), or None ("?") if not available."""
    from entrolab.integrations.verl_support import support as verl

    try:
        from entrolab.integrations.trl_support import support as trl
    except ImportError:
        trl = None
    return {"verl": verl, "TRL": trl}


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


def _cmd_convert(args) -> int:
    from entrolab.diagnostics.convert import convert_verl

    base_step = None if args.base_step < 0 else args.base_step
    path = convert_verl(Path(args.dump), Path(args.out), run=args.run, base_step=base_step)
    print(f"rollouts: {path}\nnext: entrolab diagnose {path}")
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


def _cmd_prefs_build(args) -> int:
    from entrolab.config import parse_override
    from entrolab.preference.build import build_preferences

    params = {}
    for text in args.param:
        keys, value = parse_override(text)
        params[".".join(keys)] = value
    path, summary = build_preferences(
        model=args.model, task=args.task, judge=args.judge, params=params, members=args.member,
        factors=args.factor, rule=args.rule, margin=args.margin, max_pairs=args.pairs_per_prompt,
        heron_margins=args.heron_margins, heron_sigmas=args.heron_sigmas, soft_label=args.soft_label, k=args.k,
        num_prompts=args.num_prompts, prompt_offset=args.prompt_offset, split=args.split, seed=args.seed,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, device=args.device,
        flip_frac=args.flip_frac, out=args.out, progress=not args.quiet)
    print(f"pairs: {path} ({summary['pairs']} pairs from {summary['prompts_with_pairs']} of {summary['prompts']} "
          f"prompts x {summary['k']} samples, {summary['total_s']:.1f} s)")
    return 0


def _cmd_prefs_check(args) -> int:
    from entrolab.preference.data import load_preferences, write_preferences

    pairs = load_preferences(args.path, split=args.split)
    soft = sum(x.label < 1.0 for x in pairs)
    flipped = sum(bool(x.meta.get("flipped")) for x in pairs)
    print(f"{args.path}: {len(pairs)} pairs, {len({x.prompt for x in pairs})} prompts, {soft} with a soft label "
          f"(< 1), {flipped} flipped")
    if args.to:
        print(f"written: {write_preferences(pairs, args.to)}")
    return 0


def _add_prefs_parser(sub) -> None:
    """``entrolab prefs build | check``: pairs from a model's own samples; validate/convert a pair file
    (docs/preferences.md)."""
    prefs = sub.add_parser("prefs", help="preference data: build pairs from a model's samples, check/convert files")
    psub = prefs.add_subparsers(dest="prefs_command", required=True)
    s = psub.add_parser("build", help="sample K per prompt, score with a judge, pair by a rule, write pairs")
    s.add_argument("--model", required=True, help="HF model folder, or 'demo-base' (the demo's Countdown base)")
    s.add_argument("--task", default="countdown", help="task name or a YAML mapping {name: ..., ...}")
    s.add_argument("--judge", default="verifier", help="verifier | reward:<name> | ensemble | heron")
    s.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a hyperparameter of the judge's reward term (reward:<name>, ensemble)")
    s.add_argument("--member", action="append", default=[], metavar="SPEC",
                   help="an ensemble member: a reward name or a YAML mapping {name: reward_model, path: ...}")
    s.add_argument("--factor", action="append", default=[], metavar="SPEC",
                   help="a HERON factor (a reward name or YAML mapping), most important first")
    s.add_argument("--rule", default="verifier", choices=["verifier", "margin", "best_vs_worst", "heron"])
    s.add_argument("--margin", type=float, default=0.0, help="score gap a margin/best_vs_worst pair must exceed")
    s.add_argument("--pairs-per-prompt", type=int, default=None,
                   help="cap on pairs per prompt (default: every disjoint pair the rule gives)")
    s.add_argument("--heron-margins", type=float, nargs="+", default=None, help="absolute margin per factor")
    s.add_argument("--heron-sigmas", type=float, nargs="+", default=None,
                   help="margin per factor as sigma x that factor's std over all samples")
    s.add_argument("--soft-label", action="store_true", help="label = sigmoid(score gap) instead of 1")
    s.add_argument("--k", type=int, default=8, help="samples per prompt")
    s.add_argument("--num-prompts", type=int, default=None, help="first N prompts of the split (default all)")
    s.add_argument("--prompt-offset", type=int, default=0, help="skip this many prompts of the split first")
    s.add_argument("--split", default="train")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--max-new-tokens", type=int, default=40)
    s.add_argument("--batch-size", type=int, default=512, help="sequences per sampler call")
    s.add_argument("--device", default="auto")
    s.add_argument("--flip-frac", type=float, default=0.0, help="swap chosen/rejected of this share of pairs")
    s.add_argument("--out", default="pairs.jsonl", help=".jsonl, .parquet, or a folder (datasets)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=_cmd_prefs_build)

    s = psub.add_parser("check", help="validate a pair file (errors name file:line or row); --to converts it")
    s.add_argument("path", help=".jsonl, .parquet, or a datasets folder")
    s.add_argument("--split", default=None, help="split of a DatasetDict folder")
    s.add_argument("--to", default=None, help="also write the pairs here (.jsonl, .parquet or a folder)")
    s.set_defaults(fn=_cmd_prefs_check)


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

    s = sub.add_parser("convert", help="another engine's rollout dump -> entrolab's rollout schema (for diagnose)")
    s.add_argument("engine", choices=["verl"], help="verl: trainer.validation_data_dir or rollout_data_dir")
    s.add_argument("dump", help="dump directory of <step>.jsonl files, or one such file")
    s.add_argument("--out", default="runs/converted", help="output directory (writes <run>.jsonl)")
    s.add_argument("--run", default="verl", help="run label of the trained steps")
    s.add_argument("--base-step", type=int, default=0,
                   help="step whose samples are labelled run 'base' (verl's val_before_train is 0); -1: none")
    s.set_defaults(fn=_cmd_convert)

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
    s.add_argument("--reasons", action="store_true", help="say why an engine column is 'no'")
    s.set_defaults(fn=_cmd_list)

    _add_prefs_parser(sub)

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
