"""Scenes and cameras, models, training, editing, import and export."""
