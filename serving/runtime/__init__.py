"""Starting and stopping a whole local service: the embedded Redis, Ray and the Serve applications, the
gRPC front, and the watchdog that takes Ray down with the process that started it.
"""
