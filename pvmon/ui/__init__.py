"""pvmon's Textual TUI: the live view of a boot, the trace player and the
divergence view. Entry points: :mod:`pvmon.ui.app` (``run_boot``,
``run_view``, ``run_divergence``)."""
