"""The ``thermax`` command line: ``thermax run SYSTEM``, ``sweep``, ``report``, ``list``.

See ``shared/docs/RUNS.md`` (the run contract) and ``docs/cli.md``.
"""

import argparse
import functools
import json
import sys
import time
from pathlib import Path

USAGE = """usage: thermax run SYSTEM [--option VALUE ...] [--out DIR]
       thermax run SYSTEM --resume DIR [--steps N]
       thermax run SYSTEM ... --coordinator HOST:PORT --num-processes P --process-id I
       thermax sweep SYSTEM --param NAME SPEC [--option VALUE ...] --out DIR
       thermax sweep --resume DIR
       thermax report DIR
       thermax list"""


class _Fail(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line and exit status 2."""

    def error(self, message):  # noqa: D401 - argparse hook
        raise _Fail(message)


def _system_parser(name: str):
    from .catalog import entry

    parser = _Parser(prog=f"thermax run {name}", add_help=True, allow_abbrev=False)
    parser.add_argument("--out", type=str, default=None, help="output directory")
    parser.add_argument("--resume", type=str, default=None, help="continue the run in DIR")
    parser.add_argument("--coordinator", type=str, default=None,
                        help="multi-process run: HOST:PORT of process 0")
    parser.add_argument("--num-processes", type=int, default=None,
                        help="multi-process run: number of processes")
    parser.add_argument("--process-id", type=int, default=None,
                        help="multi-process run: this process's rank in [0, P)")
    parser.add_argument("--distributed", action="store_true", default=None,
                        help="multi-process run with coordinator, process count and rank "
                        "read from the cluster scheduler's environment (SLURM, ...)")
    for o in entry(name).all_options():
        kwargs = {"type": o.type, "default": None, "help": f"{o.help} (default: {o.default})"}
        if o.choices is not None:
            kwargs["choices"] = o.choices
        if o.nargs is not None:
            kwargs["nargs"] = o.nargs
        parser.add_argument(o.flag, dest=o.name, **kwargs)
    return parser


def _list() -> int:
    from .catalog import SYSTEMS

    print("every system: --out DIR (the run directory), --resume DIR (continue a run)\n")
    for name, ent in SYSTEMS.items():
        print(f"{name}: {ent.summary}")
        for o in ent.all_options():
            choices = f" {{{','.join(map(str, o.choices))}}}" if o.choices else ""
            print(f"    {o.flag}{choices}  {o.help} (default: {o.default})")
        print()
    return 0


def _run(argv: list[str]) -> int:
    from .catalog import SYSTEMS, OptionError, build_run

    if not argv or argv[0].startswith("-"):
        raise _Fail(f"missing SYSTEM; known systems: {', '.join(SYSTEMS)}")
    name, rest = argv[0], argv[1:]
    if name not in SYSTEMS:
        raise _Fail(f"unknown system {name!r}; known systems: {', '.join(SYSTEMS)}")
    args = vars(_system_parser(name).parse_args(rest))
    out, resume = args.pop("out"), args.pop("resume")
    processes = {k: args.pop(k) for k in ("coordinator", "num_processes", "process_id",
                                          "distributed")}
    given = {k: v for k, v in args.items() if v is not None}
    from .train._distributed import initialize

    try:
        initialize(processes["coordinator"], processes["num_processes"],
                   processes["process_id"], from_environment=bool(processes["distributed"]))
    except ValueError as err:
        raise _Fail(str(err)) from None

    if resume is not None:
        out_dir = Path(resume)
        config_file = out_dir / "config.json"
        if not config_file.is_file():
            raise _Fail(f"--resume {resume}: no run there (config.json missing)")
        if out is not None and Path(out).resolve() != out_dir.resolve():
            raise _Fail(f"--resume {resume} continues the run in that directory; drop "
                        f"--out {out} (or give the same directory)")
        saved = json.loads(config_file.read_text())
        if saved["system"] != name:
            raise _Fail(f"--resume {resume}: that run is of system {saved['system']!r}, "
                        f"not {name!r}")
        extra = sorted(set(given) - {"steps"})
        if extra:
            raise _Fail("--resume continues a run with its saved options; only --steps may "
                        f"change (got {', '.join('--' + e.replace('_', '-') for e in extra)})")
        options = {**saved["config"], **given}
    else:
        out_dir = Path(out) if out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (out_dir / "checkpoint").exists() or (out_dir / "results.json").exists():
            raise _Fail(f"--out {out_dir} already holds a run; continue it with --resume "
                        f"{out_dir} or choose another --out")
        options = given
    try:
        run = build_run(name, options)
    except OptionError as err:
        raise _Fail(str(err)) from None

    import jax

    from .train import NonFiniteError, execute, format_summary

    writer = jax.process_index() == 0
    procs = f", {jax.process_count()} processes" if jax.process_count() > 1 else ""
    if writer:
        print(f"thermax run {name} -> {out_dir}  ({run.trainer.mesh.size} device(s){procs}, "
              f"{run.config['dtype']})", file=sys.stderr)
    from .train._loggers import close_loggers, open_loggers

    run_execute = getattr(run, "execute", None) or functools.partial(execute, run)
    summary = getattr(run, "summary", None) or format_summary
    loggers = open_loggers(run.config, out_dir, resume=resume is not None)
    try:
        results = run_execute(out_dir, resume=resume is not None,
                              **({"loggers": loggers} if loggers else {}))
    except NonFiniteError as err:
        print(f"thermax: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: checkpoint saved; continue with "
              f"'thermax run {name} --resume {out_dir}'", file=sys.stderr)
        return 130
    finally:
        close_loggers(loggers)
    if writer:
        print(summary(results))
        print(f"results in {out_dir}/results.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``thermax`` command line on ``argv`` (default: ``sys.argv[1:]``); return the
    exit status (0 success, 1 a run that stopped on a fault, 2 bad input)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(USAGE)
            return 0 if argv else 2
        if argv[0] == "list":
            return _list()
        if argv[0] == "run":
            return _run(argv[1:])
        if argv[0] in ("sweep", "report"):
            from ._sweep_cli import report_command, sweep_command

            return (sweep_command if argv[0] == "sweep" else report_command)(argv[1:])
        raise _Fail(f"unknown command {argv[0]!r}; commands: run, sweep, report, list")
    except _Fail as err:
        print(f"thermax: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
