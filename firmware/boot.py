# Runs before main.py. It must always return, whatever happens, so the REPL and the application
# stay reachable for a technician.
try:
    import gc

    gc.collect()
except Exception:
    pass
