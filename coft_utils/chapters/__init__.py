"""Chapter layer: one experiment module (config, presets, units of work) and one report module
(summaries, tables, figures, claim verdicts) per chapter of the book. A chapter imports the
foundation, never another chapter.
"""
