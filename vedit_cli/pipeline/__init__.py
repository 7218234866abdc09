"""vedit_cli.pipeline"""
