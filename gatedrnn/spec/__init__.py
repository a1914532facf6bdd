"""What a sweep is (no torch): the configuration and its id, the training settings, the grid and
its stages, which configurations pack together, and what a worker is told.

The bottom layer: it imports no other part of gatedrnn. See DESIGN.md, "Layout".
"""
