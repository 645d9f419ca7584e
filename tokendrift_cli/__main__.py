from tokendrift_cli.cli import main

main()
