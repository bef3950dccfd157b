"""``labsuite audio``: check the sound output the metronome will use.

``test`` opens the output (the system default unless ``--device``), plays a few clicks scheduled
on the device's clock and prints the device, its sample rate, the reported output latency and each
click's DAC time on the LSL clock; ``devices`` lists the outputs PortAudio sees.
"""

from __future__ import annotations

import argparse

COMMAND = "audio"
HELP = "Sound output for the metronome: play test clicks (device, rate, latency), list devices."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``test`` and ``devices`` actions."""
    from labsuite.audio.clicks import CLICKS, DEFAULT_VOLUME_DB, EARS

    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = sub.add_parser("test", help="play a few clicks; print device, sample rate, output latency")
    t.add_argument("--device", default=None,
                   help="output device name (or part of it) or index (default: the system default)")
    t.add_argument("--clicks", type=int, default=6, help="how many clicks (default 6)")
    t.add_argument("--spm", type=float, default=120.0, help="clicks per minute (default 120)")
    t.add_argument("--sound", choices=CLICKS, default="woodblock", help="click sound (default woodblock)")
    t.add_argument("--ear", choices=EARS, default="both", help="which ear (default both)")
    t.add_argument("--volume-db", type=float, default=DEFAULT_VOLUME_DB,
                   help=f"click level in dB re full scale, -60..0 (default {DEFAULT_VOLUME_DB:g})")
    t.add_argument("--rate-hz", type=int, default=None, help="sample rate (default 48000)")
    t.add_argument("--latency-s", type=float, default=None, help="output buffer, s (default 0.1)")
    sub.add_parser("devices", help="list the output devices PortAudio sees")


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; 1 (with the device named) when there is no working output."""
    if args.action == "devices":
        return _devices()
    return _test(args)


def _devices() -> int:
    from labsuite.audio.metronome import import_sounddevice

    sd = import_sounddevice()
    outputs = [d for d in sd.query_devices() if d["max_output_channels"] > 0]
    if not outputs:
        print("no output devices (is the sound server running?)")
        return 1
    default = sd.default.device[1]
    for d in outputs:
        api = sd.query_hostapis(d["hostapi"])["name"]
        mark = "*" if d["index"] == default else " "
        print(f"{mark} {d['index']:>3}  {d['name']}  ({api}, {d['max_output_channels']} ch, "
              f"default {d['default_samplerate']:g} Hz, latency {d['default_low_output_latency'] * 1e3:.1f}-"
              f"{d['default_high_output_latency'] * 1e3:.1f} ms)")
    return 0


def _test(args: argparse.Namespace) -> int:
    import threading

    import numpy as np

    from labsuite.audio.clicks import ClickSettings
    from labsuite.audio.metronome import Beat, Metronome, OutputSettings
    from labsuite.errors import ConfigError

    if not 1 <= args.clicks <= 1000:
        raise ConfigError(f"--clicks: expected 1-1000, got {args.clicks}")
    device: str | int | None = args.device
    if isinstance(device, str) and device.isdigit():
        device = int(device)
    output = OutputSettings(device=device, **({"sample_rate_hz": args.rate_hz} if args.rate_hz else {}),
                            **({"latency_s": args.latency_s} if args.latency_s is not None else {}))
    click = ClickSettings(sound=args.sound, ear=args.ear, volume_db=args.volume_db)
    beats: list[Beat] = []
    done = threading.Event()

    def on_beat(beat: Beat) -> None:
        beats.append(beat)
        if len(beats) >= args.clicks:
            done.set()

    with Metronome(output, click, on_beat=on_beat) as metronome:
        dev = metronome.device
        assert dev is not None and metronome.clock is not None
        print(f"device: {dev.name} (index {dev.index}, {dev.host_api}; asked for {output.device_label})")
        print(f"sample rate: {dev.sample_rate_hz:g} Hz, channels: {dev.channels}")
        print(f"reported output latency: {dev.output_latency_s * 1e3:.1f} ms")
        metronome.set_tempo(args.spm)
        period_s = 60.0 / args.spm
        if not done.wait(period_s * args.clicks + 5.0):
            metronome.check()
        metronome.set_tempo(None)
        metronome.check()
        # let the last click play out of the buffer before the stream closes
        last = beats[-1].t_lsl_s if beats else 0.0
        import pylsl

        wait_s = last - pylsl.local_clock() + 0.1
        if wait_s > 0:
            threading.Event().wait(min(wait_s, 2.0))
        stats = metronome.stats()
        offset = metronome.clock.offset_s
    beats = beats[:args.clicks]
    for b in beats:
        print(f"  beat {b.n}: leaves the DAC at LSL {b.t_lsl_s:.6f} s ({b.ear}), "
              f"written {1e3 * (b.t_lsl_s - b.written_lsl_s):.1f} ms ahead")
    lead = np.median([b.t_lsl_s - b.written_lsl_s for b in beats]) if beats else float("nan")
    print(f"measured lead (DAC time - write time), median: {lead * 1e3:.1f} ms")
    same = "the same clock" if abs(offset) < 1e-3 else "different clocks"
    print(f"stream clock - LSL clock: {offset:.6f} s ({same}, mapped by paired readings)")
    print(f"{len(beats)} clicks, {stats['underflows']} underflows, {stats['segments']} timing segment(s)")
    return 0 if len(beats) == args.clicks and stats["underflows"] == 0 else 1
