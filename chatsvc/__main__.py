from chatsvc.cli import main

main()
