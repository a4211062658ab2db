"""Scenes and cameras: the ``Scene`` type, format loaders, the demo scene."""
from recon.engine.scene.camera import Camera
from recon.engine.scene.info import describe_scene
from recon.engine.scene.load import load_scene
from recon.engine.scene.scene import Frame, Normalization, Scene

__all__ = ["Scene", "Frame", "Camera", "Normalization", "load_scene", "describe_scene"]
