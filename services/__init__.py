"""Kindred services: product matching, risk scoring, evaluation, the facade and the CLI."""

__version__ = "0.1.0"
