"""Protocol runner: scripted staged-cadence sessions, cues, check-ins and safety.

Data flow: step records (``labsuite-steps``) and force-plate streams in → stage machine → markers
(stages, cues, metronome beats, check-ins, operator actions) and treadmill commands + heartbeat out.

* :mod:`~labsuite.protocol.schema` — protocol files (YAML), validated with located errors.
* :mod:`~labsuite.protocol.machine` — :class:`SessionMachine`, the synchronous stage machine.
* :mod:`~labsuite.protocol.session` — :class:`Session`, the LSL role around the machine.
* :mod:`~labsuite.protocol.operator` — the operator command stream a GUI uses to drive a session.

``labsuite run`` (every role as a supervised process) is the composition root, :mod:`labsuite.lab`;
this package imports neither the feedback windows nor the archive.

``docs/protocols.md`` is the reference for protocol authors and for the marker vocabulary.
"""
