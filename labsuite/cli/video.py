"""``labsuite video SESSION.h5 (--step N | --time S | --event NAME) --out FILE.png|FILE.mp4``.

The frame of a step's strike (or of a time, or an event) from the session's own video, or a clip
around it, with the step's numbers drawn under the picture (labsuite.video.lookup and .clips).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

COMMAND = "video"
HELP = ("Write the video frame at a step's strike, a time or an event of a session (FILE.png), or a "
        "clip around it (FILE.mp4), with the step's numbers drawn on it.")

MAX_CLIP_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``labsuite video``."""
    parser.add_argument("session", type=Path, metavar="SESSION.h5")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--step", type=int, metavar="N",
                      help="step N of the session (1 = the first, in strike order)")
    what.add_argument("--time", type=float, metavar="S", help="S seconds after the session start")
    what.add_argument("--event", metavar="NAME",
                      help="a session event by name (stage_start, metronome, checkin, ...; recording "
                           "events as recording:KIND); the first one unless --occurrence")
    parser.add_argument("--occurrence", type=int, default=1, metavar="K",
                        help="with --event: the K-th event of that name (default 1)")
    parser.add_argument("--before-s", type=float, default=0.0, metavar="S",
                        help="clip: seconds before the strike (time, event); needs --out FILE.mp4")
    parser.add_argument("--after-s", type=float, default=0.0, metavar="S",
                        help="clip: seconds after it; needs --out FILE.mp4")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.png|FILE.mp4",
                        help="a still (.png, .jpg) or a clip (.mp4, H.264)")
    parser.add_argument("--camera", metavar="NAME",
                        help="the camera (source_id or stream name) when the session has several")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    """Find the frame(s) and write them; exit 0 when written."""
    from labsuite.archive.reader import open_session
    from labsuite.errors import ConfigError
    from labsuite.video import clips, lookup

    for name in ("before_s", "after_s"):
        v = getattr(args, name)
        if not (math.isfinite(v) and 0.0 <= v <= MAX_CLIP_S):
            raise ConfigError(f"--{name.replace('_', '-')} {v!r}: expected 0..{MAX_CLIP_S:g} s")
    if args.time is not None and not math.isfinite(args.time):
        raise ConfigError(f"--time {args.time!r}: expected seconds after the session start")
    clip = args.before_s > 0 or args.after_s > 0 or args.out.suffix.lower() in clips.CLIP_SUFFIXES
    if clip and args.out.suffix.lower() not in clips.CLIP_SUFFIXES:
        raise ConfigError(f"--out {args.out}: a clip (--before-s/--after-s) is written as FILE.mp4")
    if clip and args.before_s + args.after_s > MAX_CLIP_S:
        raise ConfigError(f"--before-s + --after-s: at most {MAX_CLIP_S:g} s in one clip")
    out = clips.check_output(args.out, overwrite=args.overwrite,
                             suffixes=clips.CLIP_SUFFIXES if clip else clips.STILL_SUFFIXES)
    if clip and args.before_s == 0 and args.after_s == 0:
        args.before_s = args.after_s = 0.5
    with open_session(args.session) as session, lookup.SessionVideo(session, args.camera) as video:
        t0 = lookup.session_t0(session)
        if args.step is not None:
            step = lookup.step_by_number(session, args.step)
            target_s, what = float(step["strike_s"]), "strike"
            lines = clips.step_caption(step, args.step, target_s - t0)
        elif args.time is not None:
            target_s, what = t0 + args.time, "time"
            lines = clips.step_caption(None, None, args.time)
        else:
            target_s, what = lookup.event_time(session, args.event, args.occurrence), "event"
            lines = [f"{args.event} #{args.occurrence} at {target_s - t0:.3f} s into the session"]
        if not clip:
            image, ref = clips.still_at(video, target_s, lines, what=what)
            clips.write_still(image, out)
            print(f"wrote {out}: frame {ref.frame_index} of {ref.segment.file} (position {ref.position}), "
                  f"{(ref.time_s - target_s) * 1000:+.0f} ms from the {what} at {target_s - t0:.3f} s")
            return 0
        refs = clips.clip_around(video, target_s, lines, out, before_s=args.before_s,
                                 after_s=args.after_s, what=what)
        files = ", ".join(dict.fromkeys(r.segment.file for r in refs))
        print(f"wrote {out}: {len(refs)} frames from {refs[0].time_s - target_s:+.3f} to "
              f"{refs[-1].time_s - target_s:+.3f} s around the {what} at {target_s - t0:.3f} s ({files})")
    return 0
