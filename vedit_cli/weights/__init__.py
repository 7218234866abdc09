"""vedit_cli.weights"""
