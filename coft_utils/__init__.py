"""coft_utils: the shared package behind the coft book.

Companion to *Overtrained Language Models Are Harder to Fine-Tune* (Springer et al., ICML 2025,
arXiv 2503.19206). Every chapter notebook imports its logic from here. Three layers, one folder
each; a layer imports only the layers above it in this list (tests/test_registry.py checks it):

foundation/ -- no chapter, no book machinery (chapters only through the registry)
    registry        the chapters of the book: notebook, title, part, experiment and report module, claims
    profiles        named presets (smoke, cpu, gpu, paper) and parameter validation before any work
    data            registry and loaders of the data sets in ../shared/data
    hubdata         every data set from the hub at gpu/paper (HubSet registry, hub-cache files, the local schema)
    checksums       every data file checked against SHA256SUMS (cached by size, mtime, inode, ctime)
    tasks           fine-tuning tasks cast as language modelling, with their splits
    lmeval_tasks    the generalist benchmarks through lm-evaluation-harness, offline
    minimal_pairs   the minimal-pair task (held-out pre-training-domain sentences vs one adjacent-word swap)
    series          checkpoint series (suite, built-in hub series, .json/.yaml) and a chapter's series
    weights         the identity of a checkpoint's weights (content fingerprint or hub commit), weight formats
    preflight       before a spend: every revision exists, no two checkpoints share weights
    models          loading, saving, tiny OLMo presets, BPE tokenizer training
    evaluate        every held-out source (gutenberg, wikitext, c4), one atomic cache, masked NLL, perplexity
    results         one atomic record per finished unit of work, with provenance; resume
    verdicts        every claim decided as a calibrated test on replicates (Verdict, trends, combine)
    verdict_shapes  the shape tests (U-shape, bend at the end), exact verdicts
    verdict_shift   the shift of the minimum with γ / learning rate (located minima only)
    verdict_pairs   two curves at equal tokens (A above B)
    verdict_params  the significance level and Monte-Carlo sizes of the tests
    verdict_design  what a replicate is: several pre-training runs (tested across runs) or one run
                    (its checkpoint-to-checkpoint scatter used as noise); the smallest detectable effect
    divergence      a non-finite loss or weights detected at its step; diverged models are not scored
    parallel        independent units of work in worker processes of one thread each
    plots           figure helpers: token axis and labels, CI bands, verdict badges, safe log axes
    costs           the cost model: FLOPs, memory per GPU, A100/H100-hours

chapters/ -- one experiment and one report module per chapter (more where a job needs its own)
    pretrain, pretrain_plan, pretrain_data, pretrain_train, pretrain_scan, pretrain_launch
                    00: the controlled pre-training suite (experiment)
    pretrain_report 00: its tables, figures and verdict
    instruct, instruct_data, instruct_sft, instruct_eval, instruct_launch
                    01: instruction tuning across checkpoints (experiment)
    instruct_panel  01: the cpu-scale general-ability panel (minimal pairs, LAMBADA, held-out perplexities)
    instruct_report, instruct_panel_report
                    01: its verdicts, figures and tables
    perturb         02: Gaussian perturbations (experiment)
    perturb_report  02: its summaries, verdicts, figures
    finetune, finetune_train, finetune_eval
                    03 and 04: fine-tuning at fixed and tuned learning rates (experiment)
    finetune_analysis, finetune_plots, finetune_report
                    03 and 04: seed means, tuned LR, figures, verdicts
    theory, theory_closed, theory_derive
                    05: the two-layer linear network (simulation, closed forms, sympy derivations)
    theory_report   05: its verdicts, tables, figures
    calibration     98: the seeded Monte-Carlo false-positive rate and power of every verdict

book/ -- the machinery that turns chapters into the site
    run             jupytext -> papermill -> jupyter-book (also ``python -m coft_utils``)
    nb              notebook helpers (set-up, parameters table, glue)
    claims          the paper's claims and each chapter's recorded verdict per profile and seed
    status          the execution-status page, from the runner's own log
    plan            every unit of work of a chapter at gpu/paper, costed (``python -m coft_utils plan``)
    submit          a chapter's units as a SLURM job array through submitit (``python -m coft_utils submit``)
    sitecheck       the rendered site checked offline in headless Chromium

Modules are imported where they are used (``from coft_utils.foundation import data``), so that
importing the package does not pull in torch or transformers.
"""
__version__ = "0.1.0"
