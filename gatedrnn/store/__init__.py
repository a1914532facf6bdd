"""The results folder and the queue over it (no torch): every path and record of a results
folder (``folder``), atomic writes (``atomic``), the claiming policy (``queue``), and the lock-free
snapshot of a sweep with the liveness rule (``status``).

Above ``spec``; below everything that trains or analyses. See DESIGN.md, "The results folder and
the queue".
"""
