"""The svdiff backend: editor, loading and sampling."""
