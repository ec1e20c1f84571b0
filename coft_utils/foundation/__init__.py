"""Foundation layer: profiles, data, models, series, evaluation, results, verdicts, plots.

Nothing here imports a chapter (``coft_utils.chapters``) or the book machinery (``coft_utils.book``),
except lazily through the chapter registry.
"""
