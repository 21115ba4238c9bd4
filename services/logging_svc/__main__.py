from services.logging_svc.server import main

main()
