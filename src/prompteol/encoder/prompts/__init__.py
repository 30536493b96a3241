"""From texts to prompts: templates, demonstrations, presets, and the prompt builder.

From texts to prompts: typed templates and demonstrations, named presets, and the builder that
validates, normalises, cuts, renders and tokenizes (no model, no torch)."""
