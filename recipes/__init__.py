"""The shipped recipes, releases, data and patches.

Installed, this directory is the package `wheelfactory_recipes` (pyproject.toml maps it), which is
how `wheelfactory.pipeline.factory.default_recipes_dir()` finds it outside a checkout. Recipe modules are
loaded from their files by the factory, never imported through this package; names starting with
`_` (this file) are not recipes.
"""
