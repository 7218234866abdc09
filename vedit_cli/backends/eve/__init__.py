"""The eve backend: editor, loading and sampling."""
