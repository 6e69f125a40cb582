"""One module per migration, named after what it changes."""
