"""Training: the loop a Ray Train worker runs (also runnable in-process), and its parts."""
