"""Process-wide runtime settings: CPU threads (threads.py) and a quiet log (quiet.py)."""
