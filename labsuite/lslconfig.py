"""Keep LSL discovery on this machine for simulated devices, demos and tests.

liblsl reads its configuration file (named by the LSLAPICFG environment variable) once, on first
use. Commands that publish simulated streams call :func:`use_machine_scope` before they touch
pylsl, so a simulated participant never appears on a lab network. Nothing happens on import.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

ENV_VAR = "LSLAPICFG"


def machine_scope_config_path() -> Path:
    """Return the path of the machine-scope LSL configuration shipped with labsuite."""
    return Path(str(resources.files("labsuite") / "data" / "lsl_local.cfg"))


def use_machine_scope() -> str:
    """Point liblsl at the shipped machine-scope config unless LSLAPICFG is already set.

    Returns the configuration path in force. Must run before the first pylsl call of the process.
    Child processes inherit the setting through the environment, which is how liblsl reads it.
    """
    current = os.environ.get(ENV_VAR)
    if current:
        return current
    path = str(machine_scope_config_path())
    os.environ[ENV_VAR] = path
    return path
