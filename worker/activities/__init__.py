"""Activity types: one module per family, each class registered by its type name."""
