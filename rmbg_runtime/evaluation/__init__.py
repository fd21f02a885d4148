"""Quality on the user's own images: `rmbg eval` (DIS metrics against ground truth, with the
field's library PySODMetrics) and `rmbg compare` (where two exports or backends differ).

Needs the `eval` extra (pysodmetrics, which brings OpenCV and SciPy); never imported by
`import rmbg_runtime`.
"""
