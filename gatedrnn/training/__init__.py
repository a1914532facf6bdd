"""One run (torch): the one loop (``loop``), the update rules and the flat Adam (``rules``), a run
and a pack as siblings over the loop (``run``, ``pack_run``), the checkpoint formats
(``checkpoints``), devices and memory (``devices``, ``malloc``), and the public entry points
``train`` and ``train_pack`` (``trainer``).

Above ``models``. See DESIGN.md, "Training without BPTT" and "Packs".
"""
