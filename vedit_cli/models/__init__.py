"""vedit_cli.models"""
