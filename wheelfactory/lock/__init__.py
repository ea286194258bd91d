"""The locked closure of a release and what installs it: one CUDA per lock, virtual environments."""
