"""Electron gas against r_s: F/N, E/N, S/N and m*/m, with a plot.

    python benchmarks/electron_gas_sweep.py --rs 1 5 10 --out DIR [--set n=13 --set steps=200]
    python benchmarks/electron_gas_sweep.py --runs RUN_DIR ... --out DIR

The first form runs ``thermax run electron-gas`` at each ``r_s`` through
:func:`thermax.quantum.sweep_electron_gas` (resumable: finished runs are read, interrupted
ones resume); ``--set NAME=VALUE`` passes any other option (``t_over_tf=0.15``). The second
tabulates finished runs (their ``results.json``). Both write ``DIR/table.json``,
``table.csv`` and ``table.png`` and print the table.
"""

import argparse
import json
import sys
from pathlib import Path

from thermax.quantum import electron_gas_table, sweep_electron_gas, write_electron_gas_table


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rs", type=float, nargs="+")
    parser.add_argument("--runs", type=Path, nargs="+")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if (args.rs is None) == (args.runs is None):
        parser.error("give --rs (run a sweep) or --runs (tabulate finished runs)")
    if args.rs is not None:
        options = {}
        for item in args.set:
            name, _, value = item.partition("=")
            options[name.replace("-", "_")] = _value(value)
        sweep_electron_gas(args.rs, options, args.out)
        return 0
    rows = electron_gas_table([json.loads((d / "results.json").read_text())
                               for d in args.runs])
    write_electron_gas_table(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
