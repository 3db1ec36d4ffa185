from simdistill.cli import main

main()
