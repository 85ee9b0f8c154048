"""`numconv gradcheck`: every op's gradients against finite differences, every kernel against the
reference, and run-twice determinism; a rich table, and a non-zero exit on any failure."""
import click

OP_CHOICES = ("conv1d", "conv2d", "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d",
              "lp_pool1d", "lp_pool2d", "global_pool")


@click.command()
@click.option("--op", type=click.Choice(OP_CHOICES), default=None,
              help="Check only this op (default: every op).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Which kernels to check (always against the NumPy reference).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for inputs and probes.")
@click.option("--eps", type=float, default=None, help="Finite-difference step (default 1e-6).")
@click.option("--atol", type=float, default=None, help="Absolute tolerance (default 1e-6).")
@click.option("--rtol", type=float, default=None, help="Relative tolerance (default 1e-5).")
@click.option("--fast", is_flag=True,
              help="Check random projections vᵀJu instead of the full Jacobian.")
@click.option("--failures-only", is_flag=True, help="List only the failing configurations.")
def gradcheck(op, device, seed, eps, atol, rtol, fast, failures_only):
    """Check analytic gradients against central finite differences (float64)."""
    from rich.console import Console
    from rich.table import Table

    from numconv import gradcheck as gc

    console = Console()
    tol = gc.Tolerances()
    for name, value in (("eps", eps), ("atol", atol), ("rtol", rtol)):
        if value is not None:
            if not value > 0:
                raise click.BadParameter(f"must be > 0, got {value}", param_hint=f"--{name}")
            setattr(tol, name, value)
    try:
        with console.status("checking gradients..."):
            results = gc.run(op, device=device, seed=seed, tol=tol, fast=fast)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None

    rows = {}
    for r in results:
        rows.setdefault((r.op, r.label), []).append(r)
    table = Table(title=f"numconv gradcheck ({device}, float64, "
                        f"{'vᵀJu projections' if fast else 'full Jacobian'}, eps={tol.eps:g})")
    for col in ("op", "configuration", "grad max abs", "grad max rel", "vs reference",
                "deterministic", "result"):
        table.add_column(col, justify="right" if "max" in col or col == "vs reference" else "left")
    n_fail = 0
    for (op_name, label), checks in rows.items():
        grads = [c for c in checks if c.check.startswith("grad")]
        ref = next(c for c in checks if c.check == "vs reference")
        det = next(c for c in checks if c.check == "determinism")
        ok = all(c.passed for c in checks)
        n_fail += not ok
        if failures_only and ok:
            continue
        table.add_row(op_name, label, f"{max(c.max_abs for c in grads):.2e}",
                      f"{max(c.max_rel for c in grads):.2e}", f"{ref.max_abs:.2e}",
                      "yes" if det.passed else "NO",
                      "[green]pass[/]" if ok else "[red]FAIL[/] " + ", ".join(
                          c.check for c in checks if not c.passed))
    console.print(table)
    summary = f"{len(rows) - n_fail} of {len(rows)} configurations passed"
    if n_fail:
        console.print(f"[red]{summary}; {n_fail} failed[/]")
        raise SystemExit(1)
    console.print(f"[green]{summary}[/]")
