"""``thermax sweep`` and ``thermax report`` (see :mod:`thermax.sweeps` and ``docs/cli.md``)."""

import sys
from pathlib import Path

from .cli import _Fail, _system_parser


def sweep_command(argv: list[str]) -> int:
    """``thermax sweep SYSTEM --param NAME SPEC [--option VALUE ...] --out DIR`` or
    ``thermax sweep [SYSTEM] --resume DIR``."""
    from .catalog import SYSTEMS, OptionError
    from .sweeps import SweepError, sweep, sweep_table
    from .train import NonFiniteError

    if argv and argv[0] == "--resume":
        if len(argv) != 2:
            raise _Fail("usage: thermax sweep --resume DIR (the options come from "
                        "DIR/sweep.json)")
        name, out, resume, param, options, warm = None, argv[1], True, None, {}, True
    else:
        if not argv or argv[0].startswith("-"):
            raise _Fail(f"missing SYSTEM; known systems: {', '.join(SYSTEMS)}")
        name = argv[0]
        if name not in SYSTEMS:
            raise _Fail(f"unknown system {name!r}; known systems: {', '.join(SYSTEMS)}")
        parser = _system_parser(name)
        parser.prog = f"thermax sweep {name}"
        parser.add_argument("--param", nargs=2, metavar=("NAME", "SPEC"), default=None,
                            help="the swept option and its values: start:stop:num "
                            "(inclusive) or a comma list")
        parser.add_argument("--warm-start", type=int, choices=(0, 1), default=1,
                            help="start each point from the previous point's trained model "
                            "(default: 1)")
        args = vars(parser.parse_args(argv[1:]))
        out, resume_dir = args.pop("out"), args.pop("resume")
        spec, warm = args.pop("param"), bool(args.pop("warm_start"))
        multi = [k for k in ("coordinator", "num_processes", "process_id", "distributed")
                 if args.pop(k, None) is not None]
        if multi:
            raise _Fail("a sweep runs in one process; --" + multi[0].replace("_", "-")
                        + " is for 'thermax run'")
        options = {k: v for k, v in args.items() if v is not None}
        if resume_dir is not None:
            if spec is not None or options or (out and Path(out).resolve()
                                               != Path(resume_dir).resolve()):
                raise _Fail("--resume continues a sweep with the options in its sweep.json; "
                            "give no other options")
            out, resume, param = resume_dir, True, None
        else:
            if spec is None:
                raise _Fail("missing --param NAME SPEC (e.g. --param beta 0.1:1.0:10)")
            if out is None:
                raise _Fail("missing --out DIR (the sweep's directory)")
            param, resume = spec[0].replace("-", "_"), False
    try:
        if resume:
            import json

            sweep_file = Path(out) / "sweep.json"
            if not sweep_file.is_file():
                raise _Fail(f"--resume {out}: no sweep there (sweep.json missing)")
            saved = json.loads(sweep_file.read_text())
            if name is not None and saved["system"] != name:
                raise _Fail(f"--resume {out}: that sweep is of system {saved['system']!r}, "
                            f"not {name!r}")
            name = saved["system"]
            rows = sweep(name, saved["param"], saved["values"], saved["options"], out,
                         resume=True)
        else:
            rows = sweep(name, param, spec[1], options, out, resume=False, warm=warm)
    except (SweepError, OptionError) as err:
        raise _Fail(str(err)) from None
    except NonFiniteError as err:
        print(f"thermax: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: continue with 'thermax sweep --resume {out}'", file=sys.stderr)
        return 130
    import json

    record = json.loads((Path(out) / "sweep.json").read_text())
    assert len(record["points"]) == len(rows)
    print(sweep_table(record))
    print(f"table in {out}/sweep.csv and {out}/sweep.json, plot in {out}/sweep.png")
    return 0


def report_command(argv: list[str]) -> int:
    """``thermax report DIR``: print the summary of a run or a sweep, redraw its plots."""
    from .sweeps import report

    if len(argv) != 1 or argv[0].startswith("-"):
        raise _Fail("usage: thermax report DIR (a run directory or a sweep directory)")
    try:
        text = report(argv[0])
    except FileNotFoundError as err:
        raise _Fail(str(err)) from None
    print(text)
    return 0
