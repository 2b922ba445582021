"""Parameter sweeps behind ``thermax sweep`` and the ``thermax report`` of a finished run.

A sweep runs one system at a sequence of values of one option (``beta``, ``rs``,
``t_over_tf``, ``trap``, ...). Every point is a normal run in ``DIR/NAME=VALUE/``
(``shared/docs/RUNS.md``), and each point's model starts from the previous point's
trained parameters (a fresh optimiser), so a sweep costs less than its points run cold.
The sweep resumes as a whole: finished points are read back, an interrupted point resumes
from its checkpoint, and the options come from ``DIR/sweep.json``.

It writes ``DIR/sweep.json`` and ``DIR/sweep.csv`` (one row per point: F, E, S with error
bars, totals and per site, the heat capacity ``C = beta^2 Var(E)`` of the final evaluation
samples, the exact F and the relative error where the system knows them) and
``DIR/sweep.png`` (``F/n``, ``E/n``, ``S/n``, ``C/n`` against the parameter, with the exact
curves where known: for the zero-field Ising model Kaufman's finite-lattice F, E, S and C).

Example:
    >>> from thermax.sweeps import sweep
    >>> rows = sweep("ising", "beta", [0.2, 0.3], {"L": 4, "steps": 100}, "sweeps/ising-4")
    >>> rows[1]["relative_error"]
"""

import csv
import dataclasses
import functools
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["COLUMNS", "SweepError", "exact_thermodynamics", "heat_capacity", "parse_spec",
           "plot_sweep", "point_dir", "report", "sweep", "sweep_table", "sweepable",
           "trained_model", "warm_start", "write_table"]

#: The columns of ``sweep.csv`` after the parameter's own column (``sweep.json`` has the
#: same keys per point).
COLUMNS = ["n", "beta", "free_energy", "free_energy_stderr", "free_energy_per_site",
           "free_energy_per_site_stderr", "energy", "energy_stderr", "energy_per_site",
           "entropy", "entropy_stderr", "entropy_per_site", "heat_capacity",
           "heat_capacity_stderr", "heat_capacity_per_site", "exact_free_energy",
           "exact_free_energy_per_site", "relative_error", "exact_energy_per_site",
           "exact_entropy_per_site", "exact_heat_capacity_per_site", "steps", "wall_time_s",
           "warm_start"]


class SweepError(ValueError):
    """A bad sweep: unknown parameter, bad SPEC, bad option; the message says what is allowed."""


# ---------------------------------------------------------------------------- parsing


def parse_spec(spec: str, kind: type = float) -> list[float] | list[int]:
    """The values a SPEC names: ``start:stop:num`` (``num`` evenly spaced values from
    ``start`` to ``stop`` inclusive, like ``numpy.linspace``) or a comma list ``a,b,c``.

    Values are rounded to 12 significant digits (``0.1:1.0:10`` gives ``0.3``, not
    ``0.30000000000000004``); with ``kind=int`` every value must be a whole number.

    Example:
        >>> parse_spec("0.1:0.3:3")
        [0.1, 0.2, 0.3]
        >>> parse_spec("8,12", int)
        [8, 12]
    """
    text = spec.strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop = float(parts[0]), float(parts[1])
            num = int(parts[2])
            if num < 1:
                raise SweepError(f"SPEC {spec!r}: num must be >= 1, got {num}")
            values = [float(f"{v:.12g}") for v in np.linspace(start, stop, num)]
        else:
            values = [float(p) for p in text.split(",")]
    except SweepError:
        raise
    except ValueError:
        raise SweepError(f"bad SPEC {spec!r}: give start:stop:num (inclusive, e.g. "
                         "0.1:1.0:10) or a comma list (e.g. 0.2,0.3,0.5)") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise SweepError(f"SPEC {spec!r}: every value must be a finite number")
    if kind is int:
        if any(v != round(v) for v in values):
            raise SweepError(f"SPEC {spec!r} names non-integer values {values}; this "
                             "parameter takes integers")
        return [int(round(v)) for v in values]
    return values


def sweepable(system: str) -> list[str]:
    """The options of ``system`` a sweep can vary: the single int or float ones."""
    from .catalog import entry

    return [o.name for o in entry(system).all_options()
            if o.type in (int, float) and o.nargs is None and o.choices is None]


def _check(system: str, param: str, values: Sequence, options: dict) -> list:
    from .catalog import SYSTEMS, OptionError, entry, validate

    if system not in SYSTEMS:
        raise SweepError(f"unknown system {system!r}; known systems: {', '.join(SYSTEMS)}")
    ok = sweepable(system)
    if param not in ok:
        raise SweepError(f"cannot sweep {param!r} of system {system!r}; sweepable options: "
                         f"{', '.join(ok)}")
    if param in options:
        raise SweepError(f"--{param.replace('_', '-')} is the swept parameter; do not give "
                         "it as an option too")
    kind = next(o.type for o in entry(system).all_options() if o.name == param)
    values = [kind(v) for v in values]
    if not values:
        raise SweepError("a sweep needs at least one value")
    if len({_label(v) for v in values}) != len(values):
        raise SweepError(f"the values {values} repeat; each point needs its own directory")
    for v in values:  # every point is checked before any work
        try:
            validate(system, {**options, param: v})
        except OptionError as err:
            raise SweepError(str(err)) from None
    return values


def _label(value) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def point_dir(out_dir: str | Path, param: str, value) -> Path:
    """The run directory of one point: ``DIR/NAME=VALUE``."""
    return Path(out_dir) / f"{param}={_label(value)}"


# ---------------------------------------------------------------------------- models


def trained_model(model_like, run_dir: str | Path):
    """The model in the newest checkpoint of ``run_dir``, read into the structure of
    ``model_like`` (a freshly built model of the same run).

    Training states (:class:`thermax.train.TrainState`, the quantum one) hold the model as
    their first field, and Equinox serialises leaves in order, so the model is the first
    part of the state file; nothing else of the state needs building.
    """
    import equinox as eqx

    from .train import read_checkpoint_meta

    ckpt = Path(run_dir) / "checkpoint"
    meta = read_checkpoint_meta(ckpt)
    if meta is None:
        raise FileNotFoundError(f"no checkpoint in {str(ckpt)!r}")
    with open(ckpt / meta["file"], "rb") as f:
        return eqx.tree_deserialise_leaves(f, model_like)


def warm_start(fresh, previous_fresh, previous_trained):
    """``fresh`` (the new point's initial model) with the previous point's trained
    parameters where they apply, and whether any were carried over.

    A floating-point array is carried over when its initial value is the same at both
    points (it does not depend on the swept parameter: network weights); one whose initial
    value changes with the parameter (a plane-wave basis at another ``r_s``, a ``p(K)``
    pretrained at another temperature, a scale set from ``beta``) stays fresh. Models of
    another structure or shape stay fresh entirely.
    """
    import equinox as eqx
    import jax

    leaves_new, tree_new = jax.tree.flatten(fresh)
    leaves_pf, tree_pf = jax.tree.flatten(previous_fresh)
    leaves_pt, tree_pt = jax.tree.flatten(previous_trained)
    if not tree_new == tree_pf == tree_pt:
        return fresh, False

    def shape(x):
        return (x.shape, x.dtype) if eqx.is_array(x) else None

    if any(shape(a) != shape(b) or shape(a) != shape(c)
           for a, b, c in zip(leaves_new, leaves_pf, leaves_pt, strict=True)):
        return fresh, False
    carried, out = 0, []
    for a, b, c in zip(leaves_new, leaves_pf, leaves_pt, strict=True):
        if eqx.is_inexact_array(a) and np.array_equal(np.asarray(a), np.asarray(b)):
            out.append(c)
            carried += 1
        else:
            out.append(a)
    return jax.tree.unflatten(tree_new, out), carried > 0


# ---------------------------------------------------------------------------- figures


def heat_capacity(results: dict) -> tuple[float | None, float | None]:
    """``C = beta^2 Var_p(E)`` and its standard error, as the final evaluation of a run
    computed them from its samples (``results.json``); ``(None, None)`` where a run has
    none (quantum runs).

    The variance is over the model's samples, so ``C`` is the model's estimate (exact when
    the model is the Boltzmann distribution).
    """
    return results.get("heat_capacity"), results.get("heat_capacity_stderr")


def exact_thermodynamics(system: str, cfg: dict) -> dict[str, float] | None:
    """Exact F, E, S, C (totals) where known in closed form: the zero-field Ising model
    (Kaufman's ``ln Z`` and its derivatives); ``None`` elsewhere."""
    from .exact import ising_thermodynamics

    if system != "ising" or cfg.get("h", 0.0) != 0.0:
        return None
    try:
        return ising_thermodynamics(int(cfg["L"]), float(cfg["beta"]), float(cfg["J"]))
    except ValueError:
        return None


def _row(param: str, value, results: dict, exact: dict | None, c: float | None,
         c_err: float | None, warm: bool | None) -> dict[str, Any]:
    n = results["n"]

    def per(x):
        return None if x is None else x / n

    return {
        param: value, "n": n, "beta": results.get("beta"),
        "free_energy": results["free_energy"],
        "free_energy_stderr": results["free_energy_stderr"],
        "free_energy_per_site": per(results["free_energy"]),
        "free_energy_per_site_stderr": per(results["free_energy_stderr"]),
        "energy": results["energy"], "energy_stderr": results["energy_stderr"],
        "energy_per_site": per(results["energy"]),
        "entropy": results["entropy"], "entropy_stderr": results["entropy_stderr"],
        "entropy_per_site": per(results["entropy"]),
        "heat_capacity": c, "heat_capacity_stderr": c_err, "heat_capacity_per_site": per(c),
        "exact_free_energy": results["exact_free_energy"],
        "exact_free_energy_per_site": per(results["exact_free_energy"]),
        "relative_error": results["relative_error"],
        "exact_energy_per_site": None if exact is None else exact["energy"] / n,
        "exact_entropy_per_site": None if exact is None else exact["entropy"] / n,
        "exact_heat_capacity_per_site": None if exact is None else exact["heat_capacity"] / n,
        "steps": results["steps"], "wall_time_s": results["wall_time_s"], "warm_start": warm,
    }


# ---------------------------------------------------------------------------- the sweep


def sweep(system: str | None, param: str | None, values: Sequence[float | int] | str | None,
          options: dict | None = None,
          out_dir: str | Path = "sweep", *, resume: bool = False, warm: bool = True,
          progress: bool = True, log=None) -> list[dict[str, Any]]:
    """Run ``system`` at each of ``values`` of the option ``param``, in order.

    Each point is a normal run (:func:`thermax.catalog.build_run`, then the run's execute)
    in ``out_dir/PARAM=VALUE``; with ``warm=True`` its model starts from the previous
    point's trained parameters (:func:`warm_start`; the optimiser starts fresh). Points
    whose ``results.json`` exists are read back, not repeated, and a point with a
    checkpoint resumes from it, so calling again after an interruption finishes the sweep.

    Args:
        system: a system of ``thermax list``.
        param: the swept option (any single int or float option, :func:`sweepable`).
        values: the values, or a SPEC string (:func:`parse_spec`).
        options: the other options, as in :func:`thermax.catalog.build_run`.
        out_dir: the sweep's directory.
        resume: continue the sweep in ``out_dir``: ``system``, ``param``, ``values``,
            ``options`` and ``warm`` come from its ``sweep.json`` (give ``system=None`` etc.
            or the same ones).
        warm: warm-start each point from the previous one.
        progress: show each run's progress bar.
        log: a callable taking a line of text (default: print to stderr).

    Returns:
        One row per point (the keys of :data:`COLUMNS`, plus ``param``), also in
        ``sweep.json``, ``sweep.csv`` and drawn in ``sweep.png``.

    Raises:
        SweepError: unknown system or parameter, bad values or options (before any work).

    Example:
        >>> rows = sweep("ising", "beta", "0.1:1.0:10", {"L": 8, "steps": 2000,
        ...              "beta_anneal": 0.0}, "sweeps/ising-8")
    """
    from .catalog import build_run

    log = log or (lambda line: print(line, file=sys.stderr))
    out = Path(out_dir)
    meta_file = out / "sweep.json"
    if resume:
        if not meta_file.is_file():
            raise SweepError(f"--resume {out}: no sweep there (sweep.json missing)")
        saved = json.loads(meta_file.read_text())
        system, param = saved["system"], saved["param"]
        values, options, warm = saved["values"], saved["options"], saved["warm_start"]
        old_rows = {_label(r[param]): r for r in saved.get("points", [])}
    else:
        if meta_file.is_file():
            raise SweepError(f"{out} already holds a sweep; continue it with --resume {out} "
                             "or choose another --out")
        old_rows = {}
    options = dict(options or {})
    if isinstance(values, str):
        from .catalog import entry

        if system in _systems() and param in sweepable(system):
            kind = next(o.type for o in entry(system).all_options() if o.name == param)
        else:
            kind = float
        values = parse_spec(values, kind)
    values = _check(system, param, values, options)
    log(f"thermax sweep {system}: {param} = {', '.join(map(_label, values))} -> {out}")
    out.mkdir(parents=True, exist_ok=True)
    record = {"system": system, "param": param, "values": values, "options": options,
              "warm_start": warm, "points": []}
    _write_sweep(out, record)

    rows: list[dict[str, Any]] = []
    previous = None  # (the previous point's fresh run, its directory)
    for i, value in enumerate(values):
        d = point_dir(out, param, value)
        cfg_options = {**options, param: value}
        label = f"[{i + 1}/{len(values)}] {param}={_label(value)}"
        if (d / "results.json").is_file():
            results = json.loads((d / "results.json").read_text())
            old = old_rows.get(_label(value))
            if old is not None:
                rows.append(old)
                log(f"{label}: done already ({d})")
                previous = (None, d)
                _write_sweep(out, {**record, "points": rows})
                continue
            run = fresh = build_run(system, cfg_options)
            warm_used = None
            log(f"{label}: done already ({d})")
        else:
            run = fresh = build_run(system, cfg_options)
            has_ckpt = (d / "checkpoint" / "latest.json").is_file()
            warm_used = False
            if warm and previous is not None and not has_ckpt:
                prev_run, prev_dir = previous
                if prev_run is None:
                    prev_run = build_run(system, {**options, param: values[i - 1]})
                model, warm_used = warm_start(run.model, prev_run.model,
                                              trained_model(prev_run.model, prev_dir))
                run = dataclasses.replace(run, model=model)
                _mark_warm(d, warm_used)
            elif has_ckpt:
                warm_used = _saved_warm(d)
            else:
                _mark_warm(d, warm_used)
            log(f"{label}: {'resuming' if has_ckpt else 'training'} in {d}"
                + (" (warm start)" if warm_used and not has_ckpt else ""))
            results = _execute(run, d, resume=has_ckpt, progress=progress)
        c, c_err = heat_capacity(results)
        if warm_used is None:
            warm_used = _saved_warm(d)
        rows.append(_row(param, value, results, exact_thermodynamics(system, run.config),
                         c, c_err, warm_used))
        _write_sweep(out, {**record, "points": rows})
        previous = (fresh, d)  # the fresh model: warm_start compares initial values
    write_table(out, record, rows)
    return rows


def _systems():
    from .catalog import SYSTEMS

    return SYSTEMS


def _execute(run, d: Path, *, resume: bool, progress: bool) -> dict:
    from .train import execute
    from .train._loggers import close_loggers, open_loggers

    # quantum runs carry their own driver
    own = getattr(run, "execute", None) or functools.partial(execute, run)
    loggers = open_loggers(run.config, d, resume=resume)
    try:
        return own(d, resume=resume, progress=progress,
                   **({"loggers": loggers} if loggers else {}))
    finally:
        close_loggers(loggers)


def _mark_warm(d: Path, warm_used: bool | None) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "warm_start.json").write_text(json.dumps({"warm_start": bool(warm_used)}) + "\n")


def _saved_warm(d: Path) -> bool | None:
    f = d / "warm_start.json"
    return json.loads(f.read_text())["warm_start"] if f.is_file() else None


def _write_sweep(out: Path, record: dict) -> None:
    from .train._records import _clean

    tmp = out / "sweep.json.tmp"
    clean = {**record, "points": [{k: _clean(v) for k, v in r.items()}
                                  for r in record["points"]]}
    tmp.write_text(json.dumps(clean, indent=1) + "\n")
    tmp.replace(out / "sweep.json")


def write_table(out_dir: str | Path, record: dict, rows: list[dict]) -> None:
    """``sweep.json``, ``sweep.csv`` and ``sweep.png`` of a sweep's rows."""
    out = Path(out_dir)
    _write_sweep(out, {**record, "points": rows})
    param = record["param"]
    fields = [param] + [c for c in COLUMNS if c != param]
    with open(out / "sweep.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if r.get(k) is None else r[k] for k in fields})
    plot_sweep(out / "sweep.png", record, rows)


def sweep_table(record: dict) -> str:
    """The printed table of a sweep: per site F, exact F, relative error, E, S, C."""
    param, rows = record["param"], record["points"]

    def f(x, spec="10.6f"):
        return "-".rjust(int(spec.split(".")[0])) if x is None else format(x, spec)

    head = (f"{record['system']} sweep of {param}: {len(rows)}/{len(record['values'])} "
            "points (per site or particle: divided by n)")
    cols = f"{param:>10} {'F/n':>10} {'+-':>9} {'exact F/n':>10} {'rel.err':>10} " \
           f"{'E/n':>10} {'S/n':>10} {'C/n':>10} {'exact C/n':>10}"
    lines = [head, cols]
    for r in rows:
        lines.append(f"{r[param]:>10g} {f(r['free_energy_per_site'])} "
                     f"{f(r['free_energy_per_site_stderr'], '9.6f')} "
                     f"{f(r['exact_free_energy_per_site'])} {f(r['relative_error'], '10.2e')} "
                     f"{f(r['energy_per_site'])} {f(r['entropy_per_site'])} "
                     f"{f(r['heat_capacity_per_site'])} "
                     f"{f(r['exact_heat_capacity_per_site'])}")
    return "\n".join(lines)


def _exact_curve(record: dict, rows: list[dict]):
    """Dense exact curves ``(x, {F, E, S, C per site})`` over the swept range, or None."""
    system, param = record["system"], record["param"]
    if not rows or param not in ("beta", "J") or system != "ising":
        return None
    from .catalog import validate

    cfg = validate(system, {**record["options"], param: rows[0][param]})
    lo, hi = min(r[param] for r in rows), max(r[param] for r in rows)
    xs = np.linspace(lo, hi, 121) if hi > lo else np.array([lo])
    curve: dict[str, list] = {"free_energy": [], "energy": [], "entropy": [],
                              "heat_capacity": []}
    keep = []
    n = int(cfg["L"]) ** 2
    for x in xs:
        t = exact_thermodynamics(system, {**cfg, param: float(x)})
        if t is None:
            continue
        keep.append(x)
        for k in curve:
            curve[k].append(t[k] / n)
    return (np.array(keep), curve) if keep else None


def plot_sweep(path: str | Path, record: dict, rows: list[dict]) -> None:
    """F/n, E/n, S/n and C/n against the swept parameter, with error bars and the exact
    curves (or points) where known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    param = record["param"]
    xs = [r[param] for r in rows]
    panels = [("free_energy", "F / n", "free_energy_per_site_stderr", "exact_free_energy"),
              ("energy", "E / n", "energy_stderr", "exact_energy"),
              ("entropy", "S / n", "entropy_stderr", "exact_entropy"),
              ("heat_capacity", "C / n", "heat_capacity_stderr", "exact_heat_capacity")]
    curve = _exact_curve(record, rows)
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5), sharex=True)
    for ax, (key, label, err_key, exact_key) in zip(axes.flat, panels, strict=True):
        ys = [np.nan if r[f"{key}_per_site"] is None else r[f"{key}_per_site"] for r in rows]
        errs = [0.0 if r.get(err_key) is None else
                (r[err_key] if err_key.endswith("per_site_stderr") else r[err_key] / r["n"])
                for r in rows]
        if curve is not None:
            ax.plot(curve[0], curve[1][key], "k-", lw=1, label="exact (Kaufman, finite L)")
        else:
            ex = [r.get(f"{exact_key}_per_site") for r in rows]
            if any(v is not None for v in ex):
                ax.plot(xs, [np.nan if v is None else v for v in ex], "k--o", ms=3, lw=1,
                        label="exact")
        ax.errorbar(xs, ys, yerr=errs, fmt="o", ms=4, color="C3", capsize=2,
                    label="variational")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel(param)
    axes[0, 0].legend(fontsize=8)
    size = record["options"].get("L") or record["options"].get("n")
    fig.suptitle(f"{record['system']}"
                 + (f" (L={size})" if record["system"].startswith("ising") and size else "")
                 + f": sweep of {param}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------- report


def report(directory: str | Path, *, draw: bool = True) -> str:
    """The summary of a finished run (``results.json``) or sweep (``sweep.json``) in
    ``directory``, with its plots redrawn (a run: ``free_energy.png`` from ``history.csv``;
    a sweep: ``sweep.png``, ``sweep.csv``).

    Raises:
        FileNotFoundError: ``directory`` holds neither.
    """
    d = Path(directory)
    if (d / "sweep.json").is_file():
        record = json.loads((d / "sweep.json").read_text())
        if draw and record["points"]:
            write_table(d, record, record["points"])
        return sweep_table(record)
    if (d / "results.json").is_file():
        from .catalog import SYSTEMS
        from .train import format_summary

        results = json.loads((d / "results.json").read_text())
        ent = SYSTEMS.get(results.get("system"))
        if ent is not None and ent.build_run is not None:
            from .quantum._run import quantum_summary as summary
        else:
            summary = format_summary
        if draw and (d / "history.csv").is_file():
            from .train._records import History, plot_history

            hist = History.__new__(History)
            hist.path = d / "history.csv"
            plot_history(d / "free_energy.png", hist.read(), results["exact_free_energy"],
                         results["n"], final=results["free_energy"],
                         final_err=results["free_energy_stderr"])
        return summary(results)
    raise FileNotFoundError(f"{d} holds neither a finished run (results.json) nor a sweep "
                            "(sweep.json)")
