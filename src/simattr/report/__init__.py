"""Reports: pictures and tables of attributions and evaluations."""

from simattr.report.grid import save_attribution_grid
from simattr.report.table import (
    TABLE_COLUMNS,
    explanation_columns,
    ranking_columns,
    ranking_rows,
    write_explanation_table,
    write_ranking_table,
)

__all__ = [
    "TABLE_COLUMNS",
    "explanation_columns",
    "ranking_columns",
    "ranking_rows",
    "save_attribution_grid",
    "write_explanation_table",
    "write_ranking_table",
]
