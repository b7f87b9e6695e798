"""Benchmarks: the gateway against a bare Flask hello under the same gunicorn settings.

Run ``python benchmarks/run.py``; see benchmarks/README.md.
"""
