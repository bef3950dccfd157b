"""A whole emulated lab: Bertec treadmill, serial and QTM plates, two x-IMU3s, one running participant.

Every device speaks its wire protocol over its real transport (TCP, pseudo-terminals) and measures
the same :class:`~emulators.gait_scene.GaitScene` participant, who runs at the belt speed the
treadmill emulator reports, steps on when the session starts and follows its metronome.
:class:`EmulatedLab` writes the lab file (``LAB.yaml``) naming them, for ``labsuite run --lab``.

Standalone, for a manual session (from the repository root)::

    PYTHONPATH=tests python -m emulators.lab --dir /tmp/emulab --lab-id emu-1
    labsuite run protocols/demo.yaml --participant P01 --lab /tmp/emulab/lab.yaml --mass-kg 70
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

from emulators.bertec import BertecEmulator
from emulators.gait_scene import GaitScene
from emulators.qtm import QTMEmulator
from emulators.serial_plate import SerialPlateEmulator
from emulators.ximu3 import XIMU3Emulator
from labsuite.calibration import load_calibration
from labsuite.drivers.sim import gait

REPO = Path(__file__).resolve().parents[2]
CAL_LEFT = REPO / "calibration" / "example-left.yaml"
CAL_QTM_RIGHT = REPO / "calibration" / "example-qtm-identity.yaml"
QTM_PLATE_ID = 2
IMU_RATE_HZ = 400.0


class EmulatedLab:
    """Start every emulator in ``folder`` (ptys, lab file) for lab ``lab_id``; a context manager."""

    def __init__(self, folder: Path, lab_id: str, *,
                 participant: gait.ParticipantSettings | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lab_id = lab_id
        self.participant = participant or gait.ParticipantSettings(mass_kg=70.0, mode="run",
                                                                   preferred_cadence_spm=160.0)
        left, right = load_calibration(CAL_LEFT), load_calibration(CAL_QTM_RIGHT)
        self.treadmill = BertecEmulator()
        self.scene = GaitScene(self.participant, self._belt_speed,
                               markers_source_id=f"labsuite-session-{lab_id}-markers")
        self.plate_left = SerialPlateEmulator(self.folder / "ttyFP-left", left.matrix, left.corners_m,
                                              left.origin_m)
        self.plate_left.play(self.scene, "left")
        self.qtm = QTMEmulator(plate_ids=(QTM_PLATE_ID,))
        self.qtm.play(self.scene, {QTM_PLATE_ID: ("right", right.corners_m, right.origin_m)})
        self.imus = {side: XIMU3Emulator(self.folder / f"ttyIMU-{side}", rate_hz=IMU_RATE_HZ)
                     for side in ("left", "right")}
        for side, imu in self.imus.items():
            imu.play(self.scene, side)
        self.lab_file = self.folder / "lab.yaml"
        self.lab_file.write_text(self.lab_text())

    def _belt_speed(self) -> float:
        right, left, _ = self.treadmill.state()
        return 0.5 * (right + left)

    def lab_text(self) -> str:
        """The lab file naming every emulator (calibration paths absolute)."""
        return f"""schema: labsuite-lab/1
lab_id: {self.lab_id}
devices:
  - kind: bertec_treadmill
    name: treadmill
    host: 127.0.0.1
    port: {self.treadmill.port}
    max_speed_m_s: 4.0
  - kind: serial_plate
    name: fp-left
    port: {self.plate_left.port}
    belt: left
    calibration: {CAL_LEFT}
  - kind: qtm_plate
    name: fp-right
    host: 127.0.0.1
    port: {self.qtm.port}
    plate_id: {QTM_PLATE_ID}
    belt: right
    calibration: {CAL_QTM_RIGHT}
  - kind: ximu3
    name: imu-left
    port: {self.imus["left"].port}
    side: left
    rate_hz: {IMU_RATE_HZ:g}
  - kind: ximu3
    name: imu-right
    port: {self.imus["right"].port}
    side: right
    rate_hz: {IMU_RATE_HZ:g}
"""

    def describe(self) -> str:
        """What the emulators did, for a failing test's message."""
        steps = [s for s in self.scene.planned if s.kind == "step"]
        first = f"{steps[0].strike_s - self.scene.step_on_s:.2f} s after stepping on" if steps \
            and self.scene.step_on_s is not None else "none"
        return (f"stepped on at {self.scene.step_on_s}, {len(steps)} steps planned (first {first}), "
                f"belt commands {[c.speeds_mm_s[0] for c in self.treadmill.commands]} mm/s, belt "
                f"now {self.treadmill.state()}, treadmill connections {self.treadmill.connections}, "
                f"frames sent: fp-left {self.plate_left.frames_sent} "
                f"({self.plate_left.device.bytes_dropped} bytes dropped, up to "
                f"{self.plate_left.max_lag_s:.3f} s late), QTM {self.qtm.frames_sent} "
                f"(connections {self.qtm.connections}), IMUs "
                f"{[imu.sent for imu in self.imus.values()]}")

    def __enter__(self) -> EmulatedLab:
        self.treadmill.__enter__()
        self.plate_left.__enter__()
        self.qtm.__enter__()
        for imu in self.imus.values():
            imu.__enter__()
        self.scene.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.scene.stop()
        for emu in (*self.imus.values(), self.qtm, self.plate_left, self.treadmill):
            emu.__exit__(None, None, None)


def main() -> None:
    """Run the emulated lab until Ctrl-C, printing the lab file's path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="folder for the ptys and lab.yaml")
    parser.add_argument("--lab-id", default="emulated", help="the lab file's lab_id")
    parser.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    args = parser.parse_args()
    stop = threading.Event()
    with EmulatedLab(args.dir, args.lab_id) as lab:
        print(f"emulated lab {args.lab_id}: {lab.lab_file}", flush=True)
        try:
            stop.wait(args.duration)
        except KeyboardInterrupt:
            pass
        print(f"participant stepped on: {lab.scene.step_on_s is not None}, steps planned: "
              f"{lab.scene.steps_planned}, treadmill commands: {len(lab.treadmill.commands)}")
    time.sleep(0.1)


if __name__ == "__main__":
    main()
