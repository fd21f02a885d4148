"""Video in and out (the `video` extra, PyAV). Importing this package does not import PyAV: io.py
imports it inside the functions that open a clip, so the CLI can recognise video suffixes for free."""
