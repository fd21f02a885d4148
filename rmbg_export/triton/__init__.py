"""`rmbg-export triton`: a Triton Inference Server model repository from an export's model.json."""
