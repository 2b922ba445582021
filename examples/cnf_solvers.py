"""Swap the ODE solver, the step size and the adjoint of a continuous flow, and measure
what each choice costs and how accurate it is.

    python examples/cnf_solvers.py [--batch 32] [--markdown]

The flow is the permutation-equivariant backflow field of ``thermax run coulomb-trap`` for
6 particles in 2D, with random (non-zero) weights so that the map is far from the
identity. For every configuration it measures, against a reference solve (Dopri8,
adaptive, rtol = atol = 1e-12, float64):

* the error of the transported positions ``x`` and of the log-determinant (the
  integrated divergence), maximum over a batch;
* the relative error of the gradient of a free-energy-like loss
  ``mean(H(x) - ln |det dx/dz|)`` with respect to the field's parameters;
* the time of one jitted forward-and-gradient evaluation (median of several).

The numbers printed by this script are the tables of ``docs/continuous-flows.md``.
"""

import argparse
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

from thermax.bijections import continuous_flow  # noqa: E402
from thermax.nn import BackflowField  # noqa: E402
from thermax.systems import CoulombTrap  # noqa: E402

N, DIM = 6, 2


def random_field(key, strength: float):
    """The backflow field with every weight randomised (a fresh one is the identity)."""
    field = BackflowField(N, DIM, width=16, depth=2, key=key, dtype=jnp.float64)
    params, static = eqx.partition(field, eqx.is_inexact_array)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    leaves = [p + strength * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys,
                                                                              strict=True)]
    return eqx.combine(jax.tree.unflatten(tree, leaves), static)


def make_eval(system, zs, **flow_options):
    """A jitted ``field -> (loss, grad, xs, log_dets)`` for one flow configuration."""
    @eqx.filter_jit
    def evaluate(field):
        def loss(field):
            flow = continuous_flow(field, **flow_options)
            keys = jax.random.split(jax.random.key(1), zs.shape[0])  # Hutchinson probes
            xs, log_dets = flow.transform_and_log_det_batch(zs, keys=keys)  # one solve
            return jnp.mean(jax.vmap(system.energy)(xs) - log_dets), (xs, log_dets)

        (value, (xs, log_dets)), grad = eqx.filter_value_and_grad(loss, has_aux=True)(field)
        return value, grad, xs, log_dets

    return evaluate


def measure(evaluate, field, reference, repeats: int) -> dict:
    out = evaluate(field)
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(evaluate(field))
        times.append(time.perf_counter() - t0)
    _, grad, xs, log_dets = out
    _, grad_ref, xs_ref, log_dets_ref = reference
    g = jnp.concatenate([x.ravel() for x in jax.tree.leaves(grad)])
    g_ref = jnp.concatenate([x.ravel() for x in jax.tree.leaves(grad_ref)])
    return {"x_error": float(jnp.max(jnp.abs(xs - xs_ref))),
            "log_det_error": float(jnp.max(jnp.abs(log_dets - log_dets_ref))),
            "grad_rel_error": float(jnp.linalg.norm(g - g_ref) / jnp.linalg.norm(g_ref)),
            "ms": 1e3 * statistics.median(times)}


def table(title: str, rows: list[tuple[str, dict]], markdown: bool) -> str:
    head = ["configuration", "x error", "log-det error", "grad rel. error", "ms / eval"]
    body = [[name, f"{r['x_error']:.1e}", f"{r['log_det_error']:.1e}",
             f"{r['grad_rel_error']:.1e}", f"{r['ms']:.1f}"] for name, r in rows]
    if markdown:
        lines = [f"**{title}**", "", "| " + " | ".join(head) + " |",
                 "|" + "|".join(["---"] + ["---:"] * 4) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
        fmt = "  ".join(f"{{:<{widths[0]}}}" if i == 0 else f"{{:>{w}}}"
                        for i, w in enumerate(widths))
        lines = [title, fmt.format(*head)] + [fmt.format(*row) for row in body]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--strength", type=float, default=0.1,
                        help="scale of the random weights (sets how far the flow moves x)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args(argv)

    key = jax.random.key(0)
    field = random_field(key, args.strength)
    system = CoulombTrap(N, DIM)
    zs = 0.8 * jax.random.normal(jax.random.fold_in(key, 2), (args.batch, N, DIM))
    reference = make_eval(system, zs, solver="dopri8", controller="pid", rtol=1e-12,
                          atol=1e-12, steps=16)(field)
    jax.block_until_ready(reference)
    moved = float(jnp.sqrt(jnp.mean((reference[2] - zs) ** 2)))

    solver_rows = []
    for solver in ("euler", "heun", "midpoint", "rk4", "tsit5", "dopri5"):
        for steps in (4, 16, 64):
            ev = make_eval(system, zs, solver=solver, steps=steps)
            solver_rows.append((f"{solver}, {steps} steps",
                                measure(ev, field, reference, args.repeats)))
    adaptive_rows = []
    for solver in ("tsit5", "dopri5"):
        for tol in (1e-3, 1e-6, 1e-9):
            ev = make_eval(system, zs, solver=solver, controller="pid", rtol=tol, atol=tol,
                           steps=4)
            adaptive_rows.append((f"{solver}, PID rtol=atol={tol:g}",
                                  measure(ev, field, reference, args.repeats)))
    adjoint_rows = []
    for adjoint in ("recursive", "backsolve", "direct"):
        for solver, steps in (("rk4", 16), ("tsit5", 16)):
            ev = make_eval(system, zs, solver=solver, steps=steps, adjoint=adjoint)
            adjoint_rows.append((f"{adjoint}, {solver} {steps} steps",
                                 measure(ev, field, reference, args.repeats)))
    divergence_rows = []
    for divergence in ("exact", "hutchinson"):
        ev = make_eval(system, zs, solver="tsit5", steps=16, divergence=divergence)
        divergence_rows.append((f"{divergence} divergence, tsit5 16 steps",
                                measure(ev, field, reference, args.repeats)))

    print(f"Backflow flow of {N} particles in {DIM}D, batch {args.batch}, float64, "
          f"{jax.default_backend()}; reference: dopri8 PID 1e-12; the flow moves each "
          f"coordinate by {moved:.2f} (rms) from |z| ~ 0.8\n")
    print(table("Fixed steps (recursive-checkpoint adjoint)", solver_rows, args.markdown))
    print()
    print(table("Adaptive steps (PID controller)", adaptive_rows, args.markdown))
    print()
    print(table("Adjoints", adjoint_rows, args.markdown))
    print()
    print(table("Divergence (Hutchinson: one Gaussian probe per sample; its 'error' is its "
                "noise)", divergence_rows, args.markdown))


if __name__ == "__main__":
    main()
