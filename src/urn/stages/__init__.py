"""One module per pipeline stage (``urn.stages.<stage>.run(cfg, run_dir)``, chained by
:mod:`urn.stages.pipeline`), plus the per-command functions the CLI calls (:mod:`urn.stages.segmentation`,
:mod:`urn.stages.uncertainty`)."""
