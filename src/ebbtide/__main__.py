from ebbtide.cli.app import main

main()
