"""The data floor: dataset registry, fixed splits and subject loaders.

Used by training, evaluation and benchmarks alike; it imports only ``io`` (and, for
volumes with a skull, ``inference.brain``'s learned brain extraction).
"""
