"""Data shipped inside the package: ``prompts/`` holds the built-in world's prompt sets and the protocol presets.

Read them with ``importlib.resources.files("erasure.data")``, never with a path relative to a checkout,
so that they work from a wheel install as they do from the repository.
"""
