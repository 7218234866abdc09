"""vedit_cli.io"""
