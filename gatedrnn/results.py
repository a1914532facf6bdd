"""Read a results folder into pandas (placeholder until the analysis issue; see load())."""
