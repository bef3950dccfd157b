"""Wire-protocol emulators for the device drivers: real TCP servers and pty serial devices."""
