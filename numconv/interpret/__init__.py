"""Seeing inside a trained CNN: first-layer filters, activation maximisation, nearest neighbours
in feature space, training curves and shift equivariance. The computations return arrays and
dataclasses and never print; `figures` draws them (matplotlib, optional: pip install
'numconv[viz]'), and every file is written atomically.

    from numconv import interpret
    run = interpret.open_run("runs/latest")
    interpret.layer_names(run.model)                      # ['c1', 'act1', 's2', ...]
    a = interpret.forward_to(run.model, x, "c3")          # activation of c3
    dx = interpret.backward_from(run.model, "c3", da)     # its input gradient
    interpret.plot_runs(["runs/a", "runs/b"], "runs/a/curves.png")
"""
from numconv.interpret._render import INSTALL_HINT, VizUnavailable, require_matplotlib
from numconv.interpret.curves import CURVES_FILE, load_metrics, plot_runs
from numconv.interpret.filters import FilterGrid, filter_grid, first_layer_grid, normalise_filters
from numconv.interpret.layers import (backward_from, default_feature_layer, first_conv,
                                      forward_all, forward_to, get_layer, layer_names,
                                      layer_stages)
from numconv.interpret.maximize import MaxResult, MaxSettings, maximize
from numconv.interpret.neighbors import cache_key, nearest, neighbors, training_features
from numconv.interpret.runs import OpenRun, load_images_for, open_run
from numconv.interpret.shift import ShiftReport, measure_shift, shift_image

__all__ = [name for name in dir() if not name.startswith("_")]
