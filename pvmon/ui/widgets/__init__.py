"""Widgets of the TUI. They draw what the engine or a trace publishes and never
call into Unicorn."""
