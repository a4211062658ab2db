"""The browser viewer (``recon view``, ``recon fit --view``), on viser, rendering with recon's own models.

target.py opens what to show; viewpoint.py converts between the browser's camera and recon's; progressive.py
schedules renders (small while moving, full when still, stale ones dropped); modes.py draws RGB, depth, alpha
or the Gaussians-per-tile heat map; server.py is the page and its render loop; live.py feeds it from training.
"""
