"""Data contracts between pipelines: motion splits, feature statistics, cached caption embeddings, text batches and the offline text encoder."""
