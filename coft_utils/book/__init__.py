"""Book machinery: the notebook runner, notebook helpers, the claims page, the site check and
the execution-status page. It imports the foundation and, through the registry, the chapters.
"""
