"""Shared test setup: LSL discovery stays on this machine; offscreen Qt; real data paths."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"

# LSL must never leave this machine in tests: use the copy of ../shared/lsl_api.cfg that labsuite
# ships (same machine scope and loopback peers, plus a port range wide enough for a whole
# simulated lab; see the file). liblsl reads it on first use, so set it before any import of pylsl
# (conftest is imported before the test modules); child processes inherit it.
_cfg = REPO / "labsuite" / "data" / "lsl_local.cfg"
os.environ["LSLAPICFG"] = str(_cfg)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture
def uid() -> str:
    """A unique id for test streams (source_id and name suffix)."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real recordings folder (../shared/data)."""
    if not SHARED_DATA.exists():
        pytest.fail(f"real data folder not found at {SHARED_DATA}")
    return SHARED_DATA
