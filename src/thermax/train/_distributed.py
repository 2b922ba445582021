"""Several processes, one run: JAX's multi-controller runtime (``jax.distributed``).

Every process runs the same program; :func:`initialize` connects them before any device
is touched, after which ``jax.devices()`` lists the devices of all processes, the
training mesh spans them, the batch and walkers are split over all of them and the model
is replicated: the code path is the one of a single process with several devices. Only
process 0 writes files (history, checkpoints, results, plots); every process reads the
same checkpoint on ``--resume`` (a shared filesystem).

On CPU the collectives go through Gloo, so a run of several processes on one machine
(or several) needs no accelerator: ``thermax run ising ... --coordinator localhost:1234
--num-processes 2 --process-id 0`` (and ``--process-id 1`` in a second shell).
"""

import jax


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, from_environment: bool = False) -> bool:
    """Join a multi-process run; return whether one was joined.

    With ``coordinator`` (``HOST:PORT`` of process 0), ``num_processes`` and
    ``process_id`` are required. With ``from_environment=True`` and no coordinator, JAX
    reads them from the cluster scheduler's environment (SLURM, Open MPI, ...). With
    neither, nothing happens (a single-process run). Must run before any JAX computation.
    """
    if coordinator is None and not from_environment:
        if num_processes is not None or process_id is not None:
            raise ValueError("--num-processes and --process-id need --coordinator HOST:PORT "
                             "(or --distributed to read them from the scheduler)")
        return False
    if coordinator is not None:
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
        if num_processes is None or process_id is None:
            raise ValueError("--coordinator needs --num-processes P and --process-id I")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(f"--process-id must be in [0, {num_processes}) and "
                             f"--num-processes >= 1; got {process_id} of {num_processes}")
    # CPU devices of different processes talk through Gloo (no effect on GPUs); a JAX
    # without the option has its own default
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, KeyError, ValueError):
        pass
    if coordinator is None:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address=coordinator,
                                   num_processes=num_processes, process_id=process_id)
    return True
