"""The training-free methods published after PromptEOL (Token Prepending, Contrastive Prompting,
ensembles, echo embeddings, EmbedFilter)."""
