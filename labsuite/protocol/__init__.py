"""Protocol runner: scripted staged-cadence sessions, cues, check-ins and safety."""
