"""The models (torch): the gated layer and its hand-written backward (``layers``), the other cells
(``cells``), the sequence modules (``rnn``), the byte model (``model``), many configurations as one
batched step (``packed``), and the private fast kernels with their checks (``fast``).

Above ``data``. See DESIGN.md, "The layer" and "Packs".
"""
