"""One module per route family; each turns HTTP into calls of :mod:`..serving` and back."""
