"""The storage boundary: jobs, positions, and the one translation of driver errors."""
