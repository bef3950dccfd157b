"""Protocol files (YAML) shipped with labsuite: the demo and example study protocols."""
