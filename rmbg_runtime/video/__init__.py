"""Video through the image pipeline (the `video` extra, PyAV). Only code that handles a video imports
this package's modules, so `import rmbg_runtime` never imports av."""
