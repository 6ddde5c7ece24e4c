"""Reports: pictures and tables of attributions and evaluations."""

from simattr.report.grid import save_attribution_grid

__all__ = ["save_attribution_grid"]
