from iacctl.cli.main import main

main()
