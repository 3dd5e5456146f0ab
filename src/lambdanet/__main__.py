from lambdanet.cli.main import main

main()
