"""The movie backend: editor, loading and sampling."""
