"""wheelfactory: the DGX Spark inference stack as wheels built against each other."""

__version__ = "0.1.0"
