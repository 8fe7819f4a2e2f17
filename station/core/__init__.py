"""The bottom layer: records every stage shares, the worker lifecycle, errors, image I/O.

Imports nothing else of the station, so that every other package may import it.
"""
