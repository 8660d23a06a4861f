"""MediRound Serve: the service and the `mediround` command."""
