"""One module per pipeline stage; each exposes a ``run_*`` function the CLI and ``urn run`` call."""
