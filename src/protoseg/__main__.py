from protoseg.cli import main

main()
