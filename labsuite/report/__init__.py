"""Session and programme reports: per-stage numbers, one self-contained HTML page, CSV for statistics.

The last box of the data flow: reads finished (or cut-short) session files through
:mod:`labsuite.archive.reader`. The public names are re-exported here, so ``from labsuite import
report; report.load_session_report(...)`` keeps working whichever module of the package holds them.
"""

from labsuite.report.tables import (
    EVENT_CHECKIN,
    EVENT_CHECKIN_REQUEST,
    MOVING_KINDS,
    PROGRAMME_COLUMN_NAMES,
    PROGRAMME_COLUMNS,
    SAFETY_EVENTS,
    SESSION_EVENTS,
    STAGE_COLOURS,
    STAGE_COLUMN_NAMES,
    STAGE_COLUMNS,
    Column,
    Event,
    ForceCurve,
    SessionReport,
    SvgPlot,
    feedback_on_fraction,
    load_programme,
    load_session_report,
    nice_ticks,
    plot_cadence,
    plot_distributions,
    plot_force_curves,
    plot_valr,
    programme_table,
    render_programme_html,
    render_session_html,
    session_files,
    stage_table,
    step_cadence_spm,
    steps_in_stage,
    table_csv,
)

__all__ = [
    "EVENT_CHECKIN", "EVENT_CHECKIN_REQUEST", "MOVING_KINDS", "PROGRAMME_COLUMNS", "PROGRAMME_COLUMN_NAMES",
    "SAFETY_EVENTS", "SESSION_EVENTS", "STAGE_COLOURS", "STAGE_COLUMNS", "STAGE_COLUMN_NAMES", "Column",
    "Event", "ForceCurve", "SessionReport", "SvgPlot", "feedback_on_fraction", "load_programme",
    "load_session_report", "nice_ticks", "plot_cadence", "plot_distributions", "plot_force_curves",
    "plot_valr", "programme_table", "render_programme_html", "render_session_html", "session_files",
    "stage_table", "step_cadence_spm", "steps_in_stage", "table_csv",
]
