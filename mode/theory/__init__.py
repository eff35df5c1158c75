"""The machine checks of ``theory/``: one module of claims per topic, their registry and their runner.

Importing this package registers nothing; :func:`mode.theory.runner.load_claims` imports the check
modules (as ``mode check`` does).
"""
