"""Video that belongs to a session: file naming, the frame-index band, frame lookup, stills and clips.

Sits beside the archive: cameras (drivers/camera.py, drivers/sim/camera.py) write video segments
next to the session file through :mod:`labsuite.video.segments`; the recorder stores the frame
table in the session file; :mod:`labsuite.video.lookup` goes from a step, a time or an event back
to the frames, and :mod:`labsuite.video.clips` writes the still or the clip with the numbers on it.
"""
