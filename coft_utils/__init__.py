"""coft_utils: the shared package behind the coft book.

Companion to *Overtrained Language Models Are Harder to Fine-Tune* (Springer et al., ICML 2025,
arXiv 2503.19206). Every chapter notebook imports its logic from here:

    profiles  named presets (smoke, cpu, gpu, paper) and parameter validation
    data      registry and loaders of the data sets in ../shared/data (checksummed)
    models    checkpoint series (hub or local), tiny OLMo presets, BPE tokenizer training
    results   one atomic record per finished unit of work, with provenance; resume
    evaluate  perplexity on fixed held-out tokens
    verdicts  every shape claim decided as a calibrated test on replicates (seeds)
    calibration  the seeded Monte-Carlo false-positive rate and power of every verdict
    parallel  independent units of work in worker processes of one thread each
    claims    the paper's claims and each chapter's recorded verdict per profile and seed
    run       jupytext -> papermill -> jupyter-book (also ``python -m coft_utils``)
    nb        notebook helpers (set-up, parameters table, glue)

Modules are imported lazily (``from coft_utils import data``) so that importing the package
does not pull in torch or transformers.
"""
__version__ = "0.1.0"
