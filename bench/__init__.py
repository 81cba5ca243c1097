"""Side-by-side benchmarks: razard against systemd's own ``Restart=`` and supervisord.

``python -m bench run [--smoke] [--out bench/results]``; see bench/README.md.
"""
