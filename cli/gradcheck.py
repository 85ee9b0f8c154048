"""`numconv gradcheck`: every op's gradients against finite differences, every kernel against the
reference, and run-twice determinism; or, with --model, a whole scaled-down model's gradients with
respect to its input and every parameter. A rich table, and a non-zero exit on any failure."""
import click

OP_CHOICES = ("conv1d", "conv2d", "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d",
              "lp_pool1d", "lp_pool2d", "global_pool", "conv1d_max")


@click.command()
@click.option("--op", type=click.Choice(OP_CHOICES), default=None,
              help="Check only this op (default: every op).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu",
              show_default=True,
              help="Which kernels to check (always against the NumPy reference); auto: cuda "
                   "where a GPU (or the simulator, NUMBA_ENABLE_CUDASIM=1) is usable, else cpu.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for inputs and probes.")
@click.option("--eps", type=float, default=None, help="Finite-difference step (default 1e-6).")
@click.option("--atol", type=float, default=None, help="Absolute tolerance (default 1e-6).")
@click.option("--rtol", type=float, default=None, help="Relative tolerance (default 1e-5).")
@click.option("--fast", is_flag=True,
              help="Check random projections vᵀJu instead of the full Jacobian.")
@click.option("--failures-only", is_flag=True, help="List only the failing configurations.")
@click.option("--model", default=None, metavar="NAME",
              help="Check a whole model instead of the ops: a name `numconv describe` takes "
                   "(lenet5, smallcnn, alexnet, vgg11, googlenet, resnet18, resnet20, plain20, "
                   "...) or 'all'. Scaled down (few channels, small input, batch 2), float64, vᵀJu "
                   "projections for the input and every parameter tensor, agreeing to --rtol.")
@click.option("--group-depth", type=click.IntRange(min=1), default=None,
              help="With --model: one projection per group of parameters sharing the first N "
                   "dotted name parts (2: per block, e.g. 'layer1.0'), instead of per tensor.")
def gradcheck(op, device, seed, eps, atol, rtol, fast, failures_only, model, group_depth):
    """Check analytic gradients against central finite differences (float64)."""
    from rich.console import Console
    from rich.table import Table

    from numconv import gradcheck as gc
    from numconv.ops._device import resolve_device

    console = Console()
    device = resolve_device(device)
    tol = gc.Tolerances()
    for name, value in (("eps", eps), ("atol", atol), ("rtol", rtol)):
        if value is not None:
            if not value > 0:
                raise click.BadParameter(f"must be > 0, got {value}", param_hint=f"--{name}")
            setattr(tol, name, value)
    if model is not None:
        _check_models(console, model, op, group_depth, device, seed, tol, failures_only)
        return
    if group_depth is not None:
        raise click.UsageError("--group-depth applies only with --model")
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


def _check_models(console, model, op, group_depth, device, seed, tol, failures_only):
    from rich.table import Table

    from numconv import gradcheck as gc
    from numconv import models

    if op is not None:
        raise click.UsageError("--op and --model are exclusive: check ops or a model")
    if model != "all" and model not in models.MODELS:
        raise click.BadParameter(f"{model!r} is not a model; choose one of "
                                 f"{', '.join(models.MODELS)} or 'all'", param_hint="--model")
    names = list(models.MODELS) if model == "all" else [model]
    try:
        with console.status("checking model gradients...") as status:
            def progress(r):
                status.update(f"checking model gradients... {r.op}: {r.label}")
            results = gc.run_models(names, device=device, seed=seed, tol=tol,
                                    group_depth=group_depth, on_result=progress)
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None

    table = Table(title=f"numconv gradcheck --model {model} ({device}, float64, scaled down, "
                        f"vᵀJu projections, rtol={tol.rtol:g})")
    for col in ("model", "d/d", "analytic vᵀJu", "numeric", "eps", "rel error", "result"):
        table.add_column(col, justify="right" if col in ("analytic vᵀJu", "numeric", "eps",
                                                         "rel error") else "left")
    n_fail = 0
    for r in results:
        n_fail += not r.passed
        if failures_only and r.passed:
            continue
        label = r.label
        if r.check == "determinism":
            label = "run twice"
            values = ("", "", "", "same bits" if r.passed else "DIFFERENT")
        else:
            a, n, eps = _parse_detail(r.detail)
            values = (a, n, eps, f"{r.max_rel:.1e}")
        table.add_row(r.op, label, *values,
                      "[green]pass[/]" if r.passed else "[red]FAIL[/]"
                      + (" (kink)" if "kink" in r.detail else ""))
    console.print(table)
    summary = f"{len(results) - n_fail} of {len(results)} checks passed"
    if n_fail:
        console.print(f"[red]{summary}; {n_fail} failed[/]")
        raise SystemExit(1)
    console.print(f"[green]{summary}[/]")


def _parse_detail(detail):
    """'analytic A, numeric N (eps E, ...)' -> (A, N, E) as short strings."""
    try:
        head, rest = detail.split(" (eps ", 1)
        a = float(head.split("analytic ")[1].split(",")[0])
        n = float(head.split("numeric ")[1])
        return f"{a:.6g}", f"{n:.6g}", rest.split(",")[0]
    except (IndexError, ValueError):
        return "", "", ""
