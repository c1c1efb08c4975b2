from fixloop.app.cli import main

main()
