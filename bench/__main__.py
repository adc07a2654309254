"""`python -m bench` (what `make bench` runs): every section in one run, one table, one JSON file.

Sections: `core` (bench.core, issue 2's targets) and, when their modules exist, `media` and
`entities`. Each section runs guarded: a failure prints one error line and the others still run.

A section module other than core is called through its `run` function if it has one, else through
each public function named `bench_*` or `*_figures`, in the order they are defined, each guarded
on its own. Arguments are passed by name when the function declares them: `work_dir` (a fresh
folder under the temp dir), `out_dir` (where results go), `quick` (smaller sizes), and the section
options (`scale_files`, `soak_minutes`, `scale_tree`; None when not given). Each returns a
dict of figures; its `checks` (`bench.report.Check`, or `Check.as_dict()`) go into the table.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench import report
from bench.core import CoreBench, CoreOptions, figures_of, find_importd

SECTIONS = (
    "core", "media", "camera", "entities", "maintenance", "watch", "legacy", "imports", "export",
    "html_report", "site", "enrich", "scale",
)  # fmt: skip
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "results.json"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description="importd benchmarks (make bench)")
    p.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help="comma-separated sections: " + ",".join(SECTIONS),
    )
    p.add_argument("--files", type=int, default=None, help="small files in the cold tree (default 100000)")
    p.add_argument("--folders", type=int, default=None, help="folders in the cold tree (default files/100)")
    p.add_argument("--big-gib", type=float, default=None, help="size of the big file in GiB (default 2)")
    p.add_argument("--runs", type=int, default=3, help="runs per side: cold, big file, baselines (median)")
    p.add_argument("--latency-files", type=int, default=None, help="files for the latency test (200)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file, or a folder for results.json")
    p.add_argument("--tmp", type=Path, default=None, help="where to generate trees (default: the temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the generated trees and daemon logs")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--profile", action="store_true", help="sample the daemon with py-spy in every phase")
    p.add_argument("--profile-gil", action="store_true", help="with --profile: sample only the GIL holder")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--scale-files", type=int, default=None, help="scale: files in its tree (1,000,000)")
    p.add_argument("--soak-minutes", type=float, default=None, help="scale: soak length (30; --quick 1)")
    p.add_argument(
        "--scale-tree", type=Path, default=None, help="scale: the tree's folder (make bench-tree's)"
    )
    return p.parse_args(argv)


def out_file(out: Path) -> Path:
    if out.is_dir() or out.suffix != ".json":
        return out / "results.json"
    return out


def core_options(args: argparse.Namespace, work: Path, out_dir: Path) -> CoreOptions:
    files = args.files or (10_000 if args.quick else 100_000)
    big_gib = args.big_gib if args.big_gib is not None else (0.25 if args.quick else 2.0)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return CoreOptions(
        work=work,
        out_dir=out_dir,
        importd=find_importd(),
        files=files,
        folders=args.folders or max(1, files // 100),
        big_bytes=int(big_gib * (1 << 30)),
        big_runs=args.runs,
        cold_runs=1 if args.quick else args.runs,
        baseline_runs=args.runs,
        latency_files=args.latency_files or (50 if args.quick else 200),
        profile=args.profile or args.profile_gil,
        profile_gil=args.profile_gil,
        py_spy=Path(py_spy) if (args.profile or args.profile_gil) and Path(py_spy).exists() else None,
    )


def run_core(args: argparse.Namespace, work: Path, out_dir: Path) -> dict[str, Any]:
    opts = core_options(args, work, out_dir)
    if opts.profile and opts.py_spy is None:
        say("bench: --profile needs py-spy (pip install py-spy); profiling skipped")
    return figures_of(CoreBench(opts, say).run())


def section_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options of one section, offered by name to every section (see the module docstring)."""
    return {"scale_files": args.scale_files, "soak_minutes": args.soak_minutes, "scale_tree": args.scale_tree}


def _call(fn: Callable[..., Any], offered: Mapping[str, Any]) -> Any:
    params = inspect.signature(fn).parameters
    kwargs = {name: offered[name] for name in params if name in offered}
    missing = [
        name
        for name, p in params.items()
        if name not in offered
        and p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if missing:
        raise TypeError(f"{fn.__name__} needs {', '.join(missing)}, which the bench does not provide")
    return fn(**kwargs)


def run_module(
    name: str, work: Path, out_dir: Path, quick: bool, extra: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """A section written by another engineer; None when its module does not exist (yet).
    `extra`: section options from the command line, passed to the functions that declare them."""
    try:
        module = importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"bench.{name}":
            return None
        raise
    offered = {"work_dir": work, "out_dir": out_dir, "quick": quick, **(extra or {})}
    run = getattr(module, "run", None)
    if callable(run):
        result = _call(run, offered)
        return dict(result) if isinstance(result, Mapping) else {"result": result}
    functions = [
        fn
        for fname, fn in vars(module).items()
        if (fname.startswith("bench_") or fname.endswith("_figures"))
        and inspect.isfunction(fn)
        and fn.__module__ == module.__name__
    ]
    if not functions:
        raise TypeError(f"bench.{name} has neither run() nor bench_*() / *_figures() functions")
    figures: dict[str, Any] = {}
    for fn in functions:
        # One function failing leaves the figures of the others.
        say(f"bench: {name}.{fn.__name__} ...")
        try:
            result = _call(fn, offered)
            figures[fn.__name__] = result if isinstance(result, Mapping) else {"result": result}
        except Exception as exc:
            say(f"bench: {name}.{fn.__name__} FAILED: {type(exc).__name__}: {exc}")
            figures[fn.__name__] = {"error": f"{type(exc).__name__}: {exc}"}
    return figures


def normalized(value: Any) -> Any:
    """`Check` objects anywhere in a section's figures become their dict form (for the JSON)."""
    if isinstance(value, report.Check):
        return value.as_dict()
    if isinstance(value, Mapping):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalized(v) for v in value]
    return value


def section_checks(figures: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The section's `checks`, and those of each function's figures one level down."""
    found = [c for c in figures.get("checks", []) if isinstance(c, Mapping)]
    for value in figures.values():
        if isinstance(value, Mapping):
            found += [c for c in value.get("checks", []) if isinstance(c, Mapping)]
    return found


def _check_of(row: Mapping[str, Any]) -> report.Check:
    kind = row.get("target_kind", "info")
    return report.Check(
        name=str(row.get("name", "?")),
        value=row.get("value"),
        unit=str(row.get("unit", "")),
        target=report.Target(
            kind if kind in report.TARGET_KINDS else "info", float(row.get("target_limit", 0))
        ),
        baseline=row.get("baseline"),
        baseline_name=str(row.get("baseline_name", "")),
        note=str(row.get("note", "")),
    )


def _without_checks(figures: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in figures.items():
        if key in ("checks", "notes", "profiles", "failures"):
            continue
        out[key] = _without_checks(value) if isinstance(value, Mapping) else value
    return out


def print_section(name: str, figures: Mapping[str, Any]) -> None:
    print(f"\n== {name} ==")
    checks = section_checks(figures)
    if checks:
        print(report.table([_check_of(c) for c in checks]))
    if name != "core":
        for line in report.flat_lines(_without_checks(figures)):
            print(line)
    for note in figures.get("notes", []):
        print(f"  * {note}")
    for what, why in (figures.get("failures") or {}).items():
        print(f"  ! {what}: {why}")
    for phase, prof in (figures.get("profiles") or {}).items():
        print(f"\n  py-spy, {phase}: {prof['samples']} samples ({prof.get('file')})")
        print(f"    start-up imports: {prof.get('imports', 0):.0%} of the samples (left out below)")
        print("    threads: " + ", ".join(f"{t} {s:.0%}" for t, s in prof["threads"][:6]))
        print("    self:")
        for func, share in prof["self"][:12]:
            print(f"      {share:6.1%}  {func}")
        print("    total (on the stack):")
        for func, share in prof["total"][:12]:
            print(f"      {share:6.1%}  {func}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        say(f"bench: unknown section(s) {', '.join(unknown)} (known: {', '.join(SECTIONS)})")
        return 2
    out = out_file(args.out)
    tmp_base = args.tmp or Path(tempfile.gettempdir())
    tmp_base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="importd-bench-", dir=tmp_base))
    machine = report.machine(work)
    print("importd bench")
    print(report.machine_line(machine), flush=True)
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine,
        "argv": sys.argv[1:] if argv is None else argv,
        "sections": {},
        "errors": {},
    }
    began = time.perf_counter()
    try:
        for name in wanted:
            section_work = work / name
            section_work.mkdir(parents=True, exist_ok=True)
            say(f"bench: section {name}")
            try:
                if name == "core":
                    figures: dict[str, Any] | None = run_core(args, section_work, out.parent)
                else:
                    figures = run_module(name, section_work, out.parent, args.quick, section_options(args))
            except Exception as exc:
                results["errors"][name] = f"{type(exc).__name__}: {exc}"
                print(f"\n== {name} ==\n  ERROR: {type(exc).__name__}: {exc}", flush=True)
                traceback.print_exc(file=sys.stderr)
                continue
            if figures is None:
                say(f"bench: section {name}: bench/{name}.py not present, skipped")
                results["sections"][name] = {"skipped": "module not present"}
                continue
            figures = normalized(figures)
            results["sections"][name] = figures
            print_section(name, figures)
            sys.stdout.flush()
    finally:
        results["duration_s"] = round(time.perf_counter() - began, 1)
        if args.keep:
            say(f"bench: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report.write_json(out, results)
    print(f"\nresults: {out} ({results['duration_s']:.0f}s)")
    missed = [
        c["name"]
        for s in results["sections"].values()
        if isinstance(s, Mapping)
        for c in section_checks(s)
        if c.get("passed") is False
    ]
    core_failures = (results["sections"].get("core") or {}).get("failures") or {}
    if results["errors"] or core_failures:
        return 1
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
