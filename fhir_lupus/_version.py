"""The tool's version, below every package so the audit trail can record it without importing the surface."""

__version__ = "0.1.0"
