"""Running a sweep: one worker over the queue (``worker``), the parent process that starts and
watches several (``launcher``), the worker loop as a Slurm job array (``slurm``), and successive
halving's rungs and promotions (``halving``).

Above ``training`` and ``analysis``. See DESIGN.md, "Faults" and "Successive halving".
"""
