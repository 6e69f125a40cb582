from r1serve.cli import main

main()
