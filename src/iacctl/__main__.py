from iacctl.launch import main

main()
