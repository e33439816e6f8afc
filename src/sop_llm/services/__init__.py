"""Services: model lifecycles, embeddings, generation routing."""
