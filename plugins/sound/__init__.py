"""The speaker plugin, its sound library and its backends."""
