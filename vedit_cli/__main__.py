from vedit_cli.cli import main

main()
