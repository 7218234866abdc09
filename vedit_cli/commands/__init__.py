"""vedit_cli.commands"""
