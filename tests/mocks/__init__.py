"""Stand-ins for the simulator, so harness tests run in seconds without LIBERO."""
