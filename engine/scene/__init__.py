"""Scenes and cameras: the ``Scene`` type, format loaders, the demo scene."""
