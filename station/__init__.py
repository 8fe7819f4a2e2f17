"""Open-source industrial inspection station."""

__version__ = "0.1.0"
