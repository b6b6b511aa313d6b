"""The ``nanogpt`` command line: a thin layer over the library."""
