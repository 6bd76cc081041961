from urn.cli import main

main()
