"""Guest platforms: the machine a guest sees around its CPU (firmware tables,
interrupt controllers, timers), one subpackage per platform. Nothing here
imports the engine; the engine and the dispatch layers drive these models."""
