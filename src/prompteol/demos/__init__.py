"""In-context demonstrations: presets, candidate sets and leak-free search."""
