"""What a run reads: byte corpora and their splits (``corpus``, numpy only), the memory tasks
(``tasks``), the user's MNIST (``mnist``), and the source contract a run reads through
(``sources``, torch).

Above ``store`` and ``spec``. See DESIGN.md, "Training without BPTT".
"""
