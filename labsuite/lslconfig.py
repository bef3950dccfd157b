"""Keep LSL discovery on this machine for simulated devices, demos and tests; know its port range.

liblsl reads its configuration file (named by the LSLAPICFG environment variable) once, on first
use. Commands that publish simulated streams call :func:`use_machine_scope` before they touch
pylsl, so a simulated participant never appears on a lab network. :func:`port_range` says which
ports discovery asks, so a driver can tell when its outlet landed where nobody looks. Nothing
happens on import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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


# ---- the port range that stream discovery on this machine depends on ----------------------

DEFAULT_BASE_PORT = 16572  # liblsl's defaults
DEFAULT_PORT_RANGE = 32


@dataclass(frozen=True)
class PortRange:
    """LSL's port range as configured (``[ports] BasePort``, ``PortRange``) and where it came from.

    Resolvers that ask known peers (this machine's machine scope, a lab without multicast) send
    their queries to these ports only, so an outlet whose UDP service port lies outside them
    cannot be found there; liblsl gives an outlet such a port when the range is full.
    """

    config: str
    base: int
    size: int

    def contains(self, port: int) -> bool:
        """True if ``port`` is one the resolvers ask."""
        return self.base <= port < self.base + self.size

    def __str__(self) -> str:
        return f"{self.base}-{self.base + self.size - 1} ({self.config})"


def config_in_use() -> Path | None:
    """The configuration file liblsl reads, in its own search order; None for its defaults."""
    env = os.environ.get(ENV_VAR)
    candidates = [Path(env)] if env else []
    candidates += [Path("lsl_api.cfg"), Path.home() / "lsl_api" / "lsl_api.cfg",
                   Path("/etc/lsl_api/lsl_api.cfg")]
    return next((p for p in candidates if p.is_file()), None)


def port_range() -> PortRange:
    """The port range of the configuration in use (liblsl's defaults when there is none)."""
    import configparser

    path = config_in_use()
    base, size = DEFAULT_BASE_PORT, DEFAULT_PORT_RANGE
    if path is None:
        return PortRange("liblsl defaults, no configuration file", base, size)
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
    try:
        parser.read(path)
        base = parser.getint("ports", "BasePort", fallback=base)
        size = parser.getint("ports", "PortRange", fallback=size)
    except (configparser.Error, ValueError, OSError):
        pass  # liblsl falls back to its defaults on a file it cannot read
    return PortRange(str(path), base, size)


def outlet_service_port(outlet: object) -> int | None:
    """The IPv4 UDP port an outlet answers discovery queries on (None if liblsl does not say)."""
    import re

    xml = outlet.get_info().as_xml()  # type: ignore[attr-defined]
    found = re.search(r"<v4service_port>(\d+)</v4service_port>", xml)
    return int(found.group(1)) if found else None
