"""The audible metronome: click synthesis, the beat scheduler on the sound card's clock, its role process.

The session decides the tempo (metronome markers); :mod:`labsuite.audio.metronome` places each click on
the output stream's sample clock and reports the LSL time at which it leaves the device, which is what
the beat markers carry. Nothing here imports Qt; PortAudio (``sounddevice``) is imported only on open.
"""
