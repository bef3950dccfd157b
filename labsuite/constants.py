"""Physical constants, defined once for every box of the data flow.

Loads are normalised by body weight (mass × g) in the processor, the stage machine's weigh-in, the
report and the calibration checks; IMUs report acceleration in g. All use standard gravity.
"""

from __future__ import annotations

GRAVITY_M_S2 = 9.80665  # standard gravity (CGPM 1901), m/s²
