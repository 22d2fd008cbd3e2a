from dagmirror.cli import main

main()
