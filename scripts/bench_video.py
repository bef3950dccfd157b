"""Benchmark the video path: what filming costs the simulated camera, and what a review costs.

Compares, in one run: drawing one frame of the virtual runner (drivers/sim/camera.render_frame),
encoding it into the MJPG segment (OpenCV, as both cameras write), the camera's whole per-frame
cost against its frame period, reading a frame back by position from the segment, and writing a
1 s H.264 clip with captions (PyAV). Usage: python scripts/bench_video.py [--frames N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from labsuite.drivers.sim import gait
from labsuite.drivers.sim.camera import render_frame
from labsuite.video import clips
from labsuite.video.segments import SegmentWriter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--rate-hz", type=float, default=100.0)
    args = ap.parse_args()
    import cv2

    rows = gait.steps_to_array(gait.GaitPlanner(gait.ParticipantSettings(), 0.0).plan_until(60.0))
    t = 5.0 + np.arange(args.frames) / args.rate_hz
    t0 = time.perf_counter()
    frames = [render_frame(rows, float(ti), i) for i, ti in enumerate(t)]
    draw_ms = (time.perf_counter() - t0) / args.frames * 1000
    with tempfile.TemporaryDirectory() as d:
        w = SegmentWriter(Path(d) / "b.camera.avi", args.rate_hz)
        t0 = time.perf_counter()
        for i, f in enumerate(frames):
            w.write([f], t[i:i + 1])
        w.end_segment()
        enc_ms = (time.perf_counter() - t0) / args.frames * 1000
        cap = cv2.VideoCapture(str(Path(d) / "b.camera.avi"))
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for pos in rng.integers(0, args.frames, 100):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(pos))
            cap.read()
        seek_ms = (time.perf_counter() - t0) / 100 * 1000
        cap.release()
        n = int(args.rate_hz)
        t0 = time.perf_counter()
        clips.write_clip(((clips.annotate(f, ["step 1 (L)"], offset_s=0.0), float(ti))
                          for f, ti in zip(frames[:n], t[:n], strict=True)), Path(d) / "c.mp4", args.rate_hz)
        clip_s = time.perf_counter() - t0
    period_ms = 1000.0 / args.rate_hz
    print(f"bench_video: {args.frames} frames of 320x240 at {args.rate_hz:g} frames/s")
    print(f"  draw the runner        {draw_ms:6.3f} ms/frame")
    print(f"  MJPG segment write     {enc_ms:6.3f} ms/frame")
    print(f"  camera per frame       {draw_ms + enc_ms:6.3f} ms of a {period_ms:.1f} ms period "
          f"({(draw_ms + enc_ms) / period_ms:.1%} of one core)")
    print(f"  read frame by position {seek_ms:6.3f} ms (100 random seeks)")
    print(f"  1 s H.264 clip         {clip_s:6.3f} s for {n} captioned frames "
          f"({clip_s / (n / args.rate_hz):.2f}x real time)")


if __name__ == "__main__":
    main()
