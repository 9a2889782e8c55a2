"""Screens of the TUI: live boot, trace player, divergence, help and prompts."""
