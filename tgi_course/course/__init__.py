"""What the notebooks need: :func:`connect`, :class:`LocalServer`, the corpus server and RAG helpers."""
