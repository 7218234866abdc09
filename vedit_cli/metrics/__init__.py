"""vedit_cli.metrics"""
