"""Session and programme reports: per-stage numbers, one self-contained HTML page, CSV for statistics.

The last box of the data flow: reads finished (or cut-short) session files through
:mod:`labsuite.archive.reader`. One module per job: ``tables`` (every per-stage number, CSV),
``loading`` (a session file into a :class:`SessionReport`), ``charts``, ``html`` (the pages) and
``programme`` (one row per session). The public names are re-exported here.
"""

from labsuite.report.charts import (
    STAGE_COLOURS,
    cadence_figure,
    distribution_figure,
    figure_svg,
    force_curve_figure,
    plot_cadence,
    plot_distributions,
    plot_force_curves,
    plot_valr,
    programme_figure,
    valr_figure,
)
from labsuite.report.drift import (
    DRIFT_COLUMN_NAMES,
    DRIFT_COLUMNS,
    DRIFT_METRICS,
    SESSION_CSV_COLUMN_NAMES,
    SESSION_CSV_COLUMNS,
    drift_rows,
    ols_slope,
)
from labsuite.report.html import render_programme_html, render_session_html
from labsuite.report.loading import (
    MOVING_KINDS,
    Event,
    ForceCurve,
    SessionReport,
    load_session_report,
)
from labsuite.report.programme import (
    PROGRAMME_COLUMN_NAMES,
    PROGRAMME_COLUMNS,
    load_programme,
    programme_table,
    session_files,
)
from labsuite.report.tables import (
    STAGE_COLUMN_NAMES,
    STAGE_COLUMNS,
    Column,
    feedback_on_fraction,
    stage_table,
    step_cadence_spm,
    steps_in_stage,
    table_csv,
)

__all__ = [
    "DRIFT_COLUMNS",
    "DRIFT_COLUMN_NAMES",
    "DRIFT_METRICS",
    "MOVING_KINDS",
    "PROGRAMME_COLUMNS",
    "PROGRAMME_COLUMN_NAMES",
    "SESSION_CSV_COLUMNS",
    "SESSION_CSV_COLUMN_NAMES",
    "STAGE_COLOURS",
    "STAGE_COLUMNS",
    "STAGE_COLUMN_NAMES",
    "Column",
    "Event",
    "ForceCurve",
    "SessionReport",
    "cadence_figure",
    "distribution_figure",
    "drift_rows",
    "feedback_on_fraction",
    "figure_svg",
    "force_curve_figure",
    "load_programme",
    "load_session_report",
    "ols_slope",
    "plot_cadence",
    "plot_distributions",
    "plot_force_curves",
    "plot_valr",
    "programme_figure",
    "programme_table",
    "render_programme_html",
    "render_session_html",
    "session_files",
    "stage_table",
    "step_cadence_spm",
    "steps_in_stage",
    "table_csv",
    "valr_figure",
]
