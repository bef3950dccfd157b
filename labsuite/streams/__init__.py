"""Stream contracts and lab-side acquisition over LSL."""
