"""Extra training loggers besides ``history.csv`` (always written): ``--logger tensorboard``.

A logger is a callable taking each history row (a dict with ``step``, ``beta``,
``free_energy``, ``free_energy_stderr``, ``energy``, ``entropy``, ...); :func:`open_loggers`
builds the ones a run's options ask for.
"""

import importlib.util
from pathlib import Path

#: history columns written as TensorBoard scalars (those a row has)
TENSORBOARD_SCALARS = ("free_energy", "free_energy_stderr", "energy", "energy_stderr",
                       "entropy", "entropy_stderr", "beta", "temperature", "acceptance")

LOGGERS = ("csv", "tensorboard")


def tensorboard_available() -> bool:
    """Whether ``tensorboardX`` can be imported (``pip install 'thermax[tensorboard]'``)."""
    return importlib.util.find_spec("tensorboardX") is not None


def check_logger(name: str) -> str | None:
    """The option check of ``--logger``: an error text, or ``None`` when usable."""
    if name == "tensorboard" and not tensorboard_available():
        return ("needs tensorboardX, which is not installed; pip install tensorboardX "
                "(or thermax[tensorboard]), or use --logger csv")
    return None


class TensorBoardLogger:
    """Scalars of each history row in ``DIR/tensorboard/`` (``tensorboard --logdir DIR``).

    On resume, events from steps after the checkpoint are dropped (``purge_step``), as
    ``history.csv`` drops its rows.
    """

    def __init__(self, out_dir: str | Path, *, resume_step: int | None = None):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(Path(out_dir) / "tensorboard"),
                                    purge_step=None if resume_step is None else resume_step + 1)

    def __call__(self, row: dict) -> None:
        step = int(row["step"])
        for key in TENSORBOARD_SCALARS:
            if row.get(key) is not None:
                self.writer.add_scalar(f"train/{key}", float(row[key]), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_loggers(cfg: dict, out_dir: str | Path, *, resume: bool = False) -> list:
    """The loggers ``cfg["logger"]`` asks for besides ``history.csv`` (none for ``csv``, and
    none on the processes of a multi-process run that write no files). With ``resume``,
    events after the step of the newest checkpoint in ``out_dir/checkpoint`` are dropped.
    Close them with :func:`close_loggers`."""
    import jax

    from ._checkpoint import read_checkpoint_meta

    name = cfg.get("logger", "csv")
    if name not in LOGGERS:
        raise ValueError(f"--logger {name!r} is not allowed; choose from {', '.join(LOGGERS)}")
    if name == "csv" or jax.process_index() != 0:   # only process 0 writes files
        return []
    problem = check_logger(name)
    if problem:
        raise ValueError(f"--logger {name} {problem}")
    meta = read_checkpoint_meta(Path(out_dir) / "checkpoint") if resume else None
    return [TensorBoardLogger(out_dir, resume_step=None if meta is None else int(meta["step"]))]


def close_loggers(loggers) -> None:
    """Close every logger that has a ``close`` method."""
    for logger in loggers:
        close = getattr(logger, "close", None)
        if close is not None:
            close()
