"""Model catalog, memory estimates, downloads and the local model store."""
