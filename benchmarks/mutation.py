"""Mutation testing of the component math, one module at a time, with only the tests that mirror it.

Uses mutmut 3 (``pip install -e ".[mutation]"``). mutmut copies the source into ``mutants/`` and
runs the test selection there; to run one module against its own tests (fast enough for 2 cores)
this script gives every module a scratch directory ``.mutation/<package>.<module>/`` holding a
copy of ``src/`` and ``tests/`` and a ``pyproject.toml`` that is the repo's ``[tool.mutmut]`` and
``[tool.pytest.ini_options]`` plus two module-specific keys:

* ``only_mutate``: the one module (e.g. ``src/entrolab/objectives/steer.py``);
* ``pytest_add_cli_args_test_selection``: its mirror tests, ``tests/<package>/test_<package>_<module>*.py``,
  plus the package's registry-wide contract tests ``tests/<package>/test_<package>_contract.py`` if any
  (``--tests`` overrides; a module without mirror tests is skipped and reported as such).

Usage (from the repo root; run in the background, it is not part of CI)::

    OMP_NUM_THREADS=1 nice python benchmarks/mutation.py objectives/steer.py rewards/ares.py
    OMP_NUM_THREADS=1 nice python benchmarks/mutation.py --package objectives   # every module of a package
    OMP_NUM_THREADS=1 nice python benchmarks/mutation.py --all                  # objectives advantages rewards diagnostics

Per module it prints one markdown row (module, mutants, killed, survived, other, kill rate, minutes)
and writes ``.mutation/<package>.<module>/survivors.txt`` (the diff of every surviving mutant, from
``mutmut show``) and ``.mutation/summary.jsonl`` (one JSON line per module). Kill rate =
killed / (killed + survived); "other" counts timeouts, mutants no selected test reaches ("no tests")
and suspicious ones, which mutmut reports separately.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("objectives", "advantages", "rewards", "diagnostics")
WORK = ROOT / ".mutation"


def _toml_value(v) -> str:
    """The TOML spelling of the flat values a [tool.*] table holds here (str, bool, number, list)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"pyproject [tool.mutmut]/[tool.pytest.ini_options]: unsupported value {v!r}")


def _table(name: str, table: dict) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in table.items())


def mirror_tests(module: Path) -> list[str]:
    """``tests/<package>/test_<package>_<stem>*.py`` for ``src/entrolab/<package>/<stem>.py``, plus the
    package's contract tests; empty if the module has no mirror test of its own."""
    pkg, stem = module.parent.name, module.stem
    own = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / pkg).glob(f"test_{pkg}_{stem}*.py"))
    contract = f"tests/{pkg}/test_{pkg}_contract.py"
    return own + [contract] if own and (ROOT / contract).is_file() and contract not in own else own


def modules_of(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / "src/entrolab" / package).glob("*.py") if p.name != "__init__.py")


def resolve_module(arg: str) -> Path:
    """``objectives/steer.py``, ``src/entrolab/objectives/steer.py`` or ``objectives.steer`` → the file."""
    rel = arg.removeprefix("src/").removeprefix("entrolab/").removeprefix("entrolab.")
    if not rel.endswith(".py"):
        rel = rel.replace(".", "/") + ".py"
    path = ROOT / "src/entrolab" / rel
    if not path.is_file():
        raise SystemExit(f"mutation.py: no module {arg!r} (looked for {path.relative_to(ROOT)})")
    return path


def run_module(module: Path, tests: list[str], *, max_children: int, python: str) -> dict:
    rel = module.relative_to(ROOT)
    work = WORK / f"{module.parent.name}.{module.stem}"
    shutil.rmtree(work, ignore_errors=True)  # a fresh run: mutmut would otherwise reuse cached verdicts
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "src", work / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mm = dict(project["tool"]["mutmut"])
    mm["only_mutate"] = [str(rel)]
    mm["pytest_add_cli_args_test_selection"] = tests
    (work / "pyproject.toml").write_text(
        _table("tool.mutmut", mm) + "\n" + _table("tool.pytest.ini_options", project["tool"]["pytest"]["ini_options"]))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # mutmut puts mutants/src first itself
    env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.time()
    log = (work / "run.log").open("w")
    rc = subprocess.call([python, "-m", "mutmut", "run", "--max-children", str(max_children)],
                         cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    minutes = (time.time() - t0) / 60
    out = subprocess.run([python, "-m", "mutmut", "results", "--all", "true"], cwd=work, env=env,
                         capture_output=True, text=True).stdout
    status = {}
    for line in out.splitlines():
        name, sep, st = line.strip().rpartition(": ")
        if sep and name:
            status[name] = st
    counts = Counter(status.values())
    survivors = sorted(n for n, s in status.items() if s == "survived")
    with (work / "survivors.txt").open("w") as f:
        for n in survivors:
            f.write(subprocess.run([python, "-m", "mutmut", "show", n], cwd=work, env=env,
                                   capture_output=True, text=True).stdout + "\n")
    killed, survived = counts.get("killed", 0), counts.get("survived", 0)
    return {"module": str(rel), "tests": tests, "rc": rc, "mutants": len(status), "killed": killed,
            "survived": survived, "other": len(status) - killed - survived,
            "other_kinds": {k: v for k, v in counts.items() if k not in ("killed", "survived")},
            "kill_rate": round(killed / (killed + survived), 3) if killed + survived else None,
            "minutes": round(minutes, 1), "survivors": survivors,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help="e.g. objectives/steer.py or rewards.ares")
    ap.add_argument("--package", action="append", choices=PACKAGES, default=[], help="every module of a package")
    ap.add_argument("--all", action="store_true", help="every module of " + ", ".join(PACKAGES))
    ap.add_argument("--tests", nargs="+", help="test files to use instead of the mirror tests (one module only)")
    ap.add_argument("--max-children", type=int, default=1, help="parallel mutant runs (default 1: shared machine)")
    ap.add_argument("--python", default=sys.executable, help="interpreter with mutmut and entrolab's deps")
    args = ap.parse_args(argv)
    mods = [resolve_module(m) for m in args.modules]
    for pkg in list(PACKAGES) if args.all else args.package:
        mods += modules_of(pkg)
    if not mods:
        ap.error("name modules, --package or --all")
    if args.tests and len(mods) != 1:
        ap.error("--tests needs exactly one module")
    if subprocess.run([args.python, "-c", "import mutmut"], capture_output=True).returncode != 0:
        raise SystemExit(f"mutation.py: mutmut is not installed for {args.python}; "
                         "run `pip install -e \".[mutation]\"` (mutmut >= 3.8)")
    WORK.mkdir(exist_ok=True)
    print("| module | mutants | killed | survived | other | kill rate | minutes |\n|---|---|---|---|---|---|---|",
          flush=True)
    for mod in mods:
        tests = args.tests or mirror_tests(mod)
        if not tests:
            print(f"| {mod.relative_to(ROOT)} | not measured: no mirror tests "
                  f"(tests/{mod.parent.name}/test_{mod.parent.name}_{mod.stem}*.py) | | | | | |", flush=True)
            continue
        r = run_module(mod, tests, max_children=args.max_children, python=args.python)
        with (WORK / "summary.jsonl").open("a") as f:
            f.write(json.dumps(r) + "\n")
        rate = "n/a" if r["kill_rate"] is None else f"{100 * r['kill_rate']:.0f}%"
        other = f"{r['other']} {r['other_kinds']}" if r["other"] else "0"
        print(f"| {r['module']} | {r['mutants']} | {r['killed']} | {r['survived']} | {other} | {rate} | "
              f"{r['minutes']} |" + ("" if r["rc"] == 0 else f" (mutmut exit {r['rc']}, see run.log)"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
